"""The VM's serial console: a real appliance guest (libvirt's embedded QEMU driver, TCG) whose console pages
on another loopback origin show with vmsession.js and xterm.js, typed into with Chromium's own key events;
a second page that comes later sees the history; read-only viewers cannot type; and what the console's
WebSocket refuses (oversized frames, floods) without disturbing the others. The console also outlives hibernate/restore and a daemon restart,
and its log on disk stays within console.logBytes while the guest prints on."""

import json
import os
import re
import struct
import time
import uuid

import pytest
import websocket

from cdp import Chromium
from conftest import running_real_daemon

SECRET = "console secret"
# A client that never reads is dropped once this much output waits for it. (Shown in
# Tests/VMSessionDaemonTests/ConsoleMultiplexerTests.swift on a real log file: the serial port of a TCG guest
# is too slow to fill the loopback socket buffers in a test's time.) Set here so the setting is exercised.
VIEWER_BUFFER = 64 * 1024
# How much of the console log stays on disk: the history's default (256 KiB), the least it may be, so that
# a guest's flood of output passes it in a test's time.
LOG_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def console_daemon():
    with running_real_daemon(
        {"VMSESSIOND_CONSOLE_VIEWER_BUFFER_BYTES": str(VIEWER_BUFFER), "VMSESSIOND_CONSOLE_LOG_BYTES": str(LOG_BYTES)}
    ) as daemon:
        yield daemon


def wait_operation(daemon, token, reply, timeout=120):
    status, operation = daemon.request("GET", f"/api/v1/operations/{reply['operation']['id']}/wait?timeout={timeout}", token=token)
    assert operation["status"] == "succeeded", (operation, daemon.log()[-3000:])


def act(daemon, session_id, token, action, body=None):
    status, reply = daemon.request("POST", f"/api/v1/sessions/{session_id}/{action}", body or {}, token=token)
    assert status in (200, 202), (action, reply)
    if status == 202:
        wait_operation(daemon, token, reply)
    return reply


@pytest.fixture(scope="module")
def guest(console_daemon):
    """One running appliance guest for the module: (name, id, token). Closed (VM and files gone) at the end."""
    name = f"console-{uuid.uuid4().hex[:8]}"
    status, grant = console_daemon.request("POST", "/api/v1/sessions", {"name": name, "secret": SECRET})
    assert status == 201, grant
    session_id, token = grant["session"]["id"], grant["token"]
    act(console_daemon, session_id, token, "open", {"cpus": 1, "memory": 256, "disk": 64, "version": "appliance"})
    act(console_daemon, session_id, token, "start", {"userData": "#!/bin/sh\necho console test user-data\n"})
    try:
        yield name, session_id, token
    finally:
        console_daemon.request("POST", f"/api/v1/sessions/{session_id}/close", {}, token=token)


def console_url(daemon, session_id, query):
    return daemon.url.replace("http://", "ws://") + f"/api/v1/sessions/{session_id}/console?{query}"


class Client:
    """A raw console client: the hello, then output gathered until what a test waits for appears."""

    def __init__(self, url, **options):
        self.socket = websocket.create_connection(url, timeout=30, **options)
        self.output = b""
        self.controls = []
        self.closed = None
        opcode, data = self.socket.recv_data(control_frame=False)
        assert opcode == websocket.ABNF.OPCODE_TEXT, (opcode, data)
        self.hello = json.loads(data)
        assert self.hello["type"] == "hello"

    @property
    def text(self):
        return self.output.decode("utf-8", "replace").replace("\r", "")

    def read_until(self, pattern, timeout=60):
        """Reads until `pattern` (a regex over the text, \\r removed) matches; returns the match."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.text, re.M)
            if match:
                return match
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"{pattern!r} never came (closed: {self.closed}); last output:\n{self.text[-1500:]}")
            self.socket.settimeout(left)
            try:
                self._receive()
            except websocket.WebSocketTimeoutException:
                continue  # said above, with the output

    def _receive(self):
        frame = self.socket.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_BINARY or frame.opcode == websocket.ABNF.OPCODE_CONT:
            self.output += frame.data
        elif frame.opcode == websocket.ABNF.OPCODE_TEXT:
            self.controls.append(json.loads(frame.data))
        elif frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            self.closed = (struct.unpack(">H", frame.data[:2])[0], frame.data[2:].decode()) if len(frame.data) >= 2 else (1005, "")
        elif frame.opcode == websocket.ABNF.OPCODE_PING:
            self.socket.pong(frame.data)

    def wait_closed(self, timeout=60):
        """The (code, reason) of the daemon's close frame, reading (and keeping) what comes before it."""
        deadline = time.monotonic() + timeout
        try:
            while self.closed is None and time.monotonic() < deadline:
                self.socket.settimeout(max(0.1, deadline - time.monotonic()))
                self._receive()
        except (OSError, websocket.WebSocketException):
            self.closed = self.closed or "connection closed"
        return self.closed

    def type(self, text):
        self.socket.send(text)

    def close(self):
        try:
            self.socket.close()
        except Exception:
            pass


def prompt(client, tries=4):
    """A shell that takes commands: Ctrl-C drops whatever half-typed line is there (the tty flushes what was
    typed after it too, so the echo waits a moment), then an echo must answer; tried again while the shell
    is still starting or busy with earlier input."""
    for attempt in range(tries):
        client.type("\x03")
        time.sleep(1)
        mark = f"m{uuid.uuid4().hex[:6]}"
        client.type(f"echo {mark}\r")
        try:
            client.read_until(rf"^{mark}$", timeout=15)
            return
        except AssertionError:
            if attempt == tries - 1 or client.closed:
                raise


def screen(browser):
    return browser.evaluate("window.screen()") or ""


def test_a_page_types_into_the_console_and_a_later_page_sees_it(console_daemon, guest, page_server, browser, artifact):
    name, session_id, token = guest
    console_daemon.ctl("origins", "approve", page_server)
    page = f"{page_server}/console.html?daemon={console_daemon.url}&name={name}&secret={SECRET.replace(' ', '%20')}"
    browser.navigate(page)
    report = browser.wait_for("['connected', 'failed'].includes(window.report.phase) && window.report", 90, "the console to connect")
    assert report["phase"] == "connected", (report.get("failure"), console_daemon.log()[-3000:])
    # What the guest printed before the page connected is there: its boot.
    browser.wait_for("window.screen().includes('VMSESSION-APPLIANCE: ready')", 60, "the boot's history")
    # Typing with the keyboard (Chromium's key events into xterm.js) reaches the guest's shell.
    assert browser.evaluate("window.focusTerminal()") is True
    browser.type_text("echo $((6*7))\n")
    browser.wait_for("window.screen().split('\\n').some(line => line.trim() === '42')", 60, "the shell's answer 42")
    print(f"\nscreenshot of the console page: {browser.screenshot(artifact('console-page.png'))}")

    # A second page, opened later and read-only, sees the line printed before it connected.
    later = Chromium()
    try:
        later.navigate(page + "&mode=read")
        report = later.wait_for("['connected', 'failed'].includes(window.report.phase) && window.report", 90, "the viewer to connect")
        assert report["phase"] == "connected" and report["readOnly"] is True, report
        later.wait_for("window.screen().split('\\n').some(line => line.trim() === '42')", 30, "the history on the later page")
        assert "echo $((6*7))" in screen(later)
        # Live: what the writer types next shows on the viewer's screen too.
        browser.type_text("echo after-$((1+1))\n")
        later.wait_for("window.screen().split('\\n').some(line => line.trim() === 'after-2')", 30, "live output on the viewer")

        # The read-only viewer's keyboard does nothing (xterm.js sends nothing) ...
        assert later.evaluate("window.focusTerminal()") is True
        later.type_text("echo typed-by-viewer\n")
        # ... and a modified page that sends anyway is closed by the daemon, its input dropped.
        later.evaluate("window.view._socket.send('echo sneaked-by-viewer\\r'); true")
        closed = later.wait_for("window.report.closed", 30, "the daemon to close the read-only viewer that typed")
        assert closed["code"] == 1008 and "read-only" in closed["reason"], closed
        print(f"\nscreenshot of the read-only viewer: {later.screenshot(artifact('console-viewer.png'))}")
    finally:
        later.close()
    browser.type_text("echo writer-still-here\n")
    browser.wait_for("window.screen().split('\\n').some(line => line.trim() === 'writer-still-here')", 30, "the writer goes on")
    text = screen(browser)
    assert "typed-by-viewer" not in text and "sneaked-by-viewer" not in text, "nothing a viewer typed reached the guest"


def test_the_daemons_page_shows_a_sessions_console(console_daemon, guest, browser, artifact):
    name, session_id, _ = guest
    browser.navigate(console_daemon.url + "/")
    browser.wait_for("document.getElementById('daemon').textContent.startsWith('vmsessiond ')", 30, "the page to reach the daemon")
    browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(console_daemon.admin_token)};"
        "document.getElementById('token-form').requestSubmit(); true")
    button = f"document.querySelector('tr[data-session-id=\"{session_id}\"] button.console')"
    browser.wait_for(f"{button} && !{button}.disabled", 30, "the session's console button")
    browser.evaluate(f"{button}.click(); true")
    # Under the page's own strict Content-Security-Policy, xterm.js loads and shows the boot's history.
    browser.wait_for("window.consoleView.view && window.consoleView.view.text().includes('VMSESSION-APPLIANCE: ready')", 60,
                     "the console on the daemon's page")
    browser.type_text("echo from-the-daemons-page\n")
    browser.wait_for("window.consoleView.view.text().split('\\n').some(l => l.trim() === 'from-the-daemons-page')", 60,
                     "typing on the daemon's page")
    print(f"\nscreenshot of the daemon's page with the console: {browser.screenshot(artifact('daemon-page-console.png'))}")


def test_the_console_refuses_a_wrong_token_an_unapproved_origin_and_a_bad_mode(console_daemon, guest):
    """A refused upgrade is a bare 400 (hummingbird-websocket answers a failed upgrade itself); the same URL
    without the upgrade gives the JSON reason, which is what vmsession.js reports."""
    _, session_id, token = guest
    url = f"/api/v1/sessions/{session_id}/console"
    for query, origin, status, code in (
            ("token=wrong", None, 401, "unauthorized"),
            (f"token={token}", "http://127.0.0.1:9", 403, "origin_not_approved"),
            (f"token={token}&mode=admin", None, 400, "invalid_argument")):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            Client(console_url(console_daemon, session_id, query), **({"origin": origin} if origin else {}))
        assert refused.value.status_code == 400, (query, origin)
        seen, error = console_daemon.request("GET", f"{url}?{query}", headers={"Origin": origin} if origin else None)
        assert (seen, error["error"]["code"]) == (status, code), error
    seen, error = console_daemon.request("GET", url, token=token)
    assert seen == 400 and error["error"]["code"] == "invalid_usage" and "WebSocket" in error["error"]["message"], error

    # A session whose VM never started has no console yet.
    status, grant = console_daemon.request("POST", "/api/v1/sessions", {"name": f"idle-{uuid.uuid4().hex[:8]}", "secret": "s"})
    seen, error = console_daemon.request("GET", f"/api/v1/sessions/{grant['session']['id']}/console", token=grant["token"])
    assert seen == 409 and error["error"]["code"] == "invalid_state", error


def test_oversized_frames_and_floods_close_that_client_only(console_daemon, guest):
    _, session_id, token = guest
    calm = Client(console_url(console_daemon, session_id, f"token={token}"))
    viewer = Client(console_url(console_daemon, session_id, f"token={token}&mode=read"))
    big = Client(console_url(console_daemon, session_id, f"token={token}"))
    flood = Client(console_url(console_daemon, session_id, f"token={token}"))
    try:
        big.socket.send_binary(b"#" * (100 << 10))
        assert big.wait_closed()[0] == 1009, "message too big"
        # A flood of keystrokes: 1 KiB frames far faster than anyone types (past a 64 KiB burst, 32 KiB/s).
        # Spaces: what fits the burst reaches the shell as a blank line, which the Ctrl-C below drops.
        try:
            for _ in range(4096):
                flood.socket.send(" " * 1024)
        except (OSError, websocket.WebSocketException):
            pass  # the daemon closed it
        code, reason = flood.wait_closed()
        assert code == 1008 and "typing too fast" in reason, (code, reason)
        # The others were not disturbed: the writer's command runs and both see its answer.
        prompt(calm)
        calm.type("echo calm-$((3*3))\r")
        calm.read_until(r"^calm-9$")
        viewer.read_until(r"^calm-9$")
        assert calm.closed is None and viewer.closed is None
    finally:
        for client in (calm, viewer, big, flood):
            client.close()


def test_the_console_outlives_hibernate_restore_and_a_daemon_restart(console_daemon, guest):
    _, session_id, token = guest
    client = Client(console_url(console_daemon, session_id, f"token={token}"))
    try:
        prompt(client)
        client.type("echo before-$((2*2))\r")
        client.read_until(r"^before-4$")
        act(console_daemon, session_id, token, "hibernate")
        client.type("echo while-saved\r")
        notice = None
        deadline = time.monotonic() + 30
        while notice is None and time.monotonic() < deadline:
            client.socket.settimeout(max(0.1, deadline - time.monotonic()))
            client._receive()
            notice = next((c for c in client.controls if c.get("type") == "notice"), None)
        assert notice and ("not running" in notice["message"] or "closed" in notice["message"]), client.controls
        assert client.closed is None, "the console stays open while the VM is hibernated"
        act(console_daemon, session_id, token, "start")  # restore
        prompt(client)
        client.type("echo restored-$((3+4))\r")
        client.read_until(r"^restored-7$")

        console_daemon.restart()
        code = client.wait_closed(timeout=30)
        assert code == "connection closed" or code[0] in (1000, 1001), code  # the daemon closed it as it stopped
        again = Client(console_url(console_daemon, session_id, f"token={token}"))
        try:
            assert again.hello["history"] > 0
            again.read_until(r"^restored-7$", timeout=10)  # the history survived the restart
            prompt(again)
            again.type("echo after-restart\r")
            again.read_until(r"^after-restart$")
        finally:
            again.close()
    finally:
        client.close()


def test_the_console_log_stays_within_its_bound_while_the_guest_prints_on(console_daemon, guest):
    _, session_id, token = guest
    log = os.path.join(console_daemon.state_dir, "machines", session_id, "console.log")
    client = Client(console_url(console_daemon, session_id, f"token={token}"))
    try:
        prompt(client)
        # About 700 KB through the serial port (with the tty's \r), mostly with nobody watching: the client
        # leaves once the guest has begun.
        client.type("seq 1 100000; echo flood-$((50+50))-done\r")
        client.read_until(r"^1000$")
    finally:
        client.close()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 4096))
            if b"flood-100-done" in f.read():
                break
        time.sleep(1)
    else:
        raise AssertionError(f"the guest never finished printing; the log is {os.path.getsize(log)} bytes")
    # The daemon frees the log's head every 10 s once it is a quarter (at least 64 KiB) past its bound.
    slack = max(LOG_BYTES // 4, 64 * 1024)
    deadline = time.monotonic() + 60
    while os.stat(log).st_blocks * 512 > LOG_BYTES + slack and time.monotonic() < deadline:
        time.sleep(1)
    info = os.stat(log)
    assert info.st_blocks * 512 <= LOG_BYTES + slack, (info.st_blocks * 512, console_daemon.log()[-2000:])
    assert info.st_size > 600_000, "the file keeps its size: QEMU appends where it did, and offsets stay"
    with open(log, "rb") as f:
        assert f.read(4096) == bytes(4096), "the head is a hole"
        f.seek(info.st_size - LOG_BYTES)
        newest = f.read().replace(b"\r", b"")
    assert b"\0" not in newest and b"99999\n100000\nflood-100-done" in newest, newest[-200:]

    # A newcomer's history is whole lines of what the guest printed last, and QEMU goes on appending.
    again = Client(console_url(console_daemon, session_id, f"token={token}"))
    try:
        again.read_until(r"^flood-100-done$", timeout=30)
        assert "\0" not in again.text and re.match(r"^\d+\n", again.text), again.text[:100]
        prompt(again)
        again.type("echo after-trim-$((5*5))\r")
        again.read_until(r"^after-trim-25$")
    finally:
        again.close()
