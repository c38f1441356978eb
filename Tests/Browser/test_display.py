"""The VM's display: a real appliance guest (libvirt's embedded QEMU driver, TCG) whose VGA screen a page
on another loopback origin shows through vmsession.js and noVNC, screenshots, and what the display's
WebSocket refuses (wrong token, unapproved origin, oversized frames) without disturbing other viewers."""

import json
import struct
import socket
import time
import urllib.request
import uuid

import pytest
import websocket


SECRET = "display secret"


@pytest.fixture(scope="module")
def guest(real_daemon):
    """One running appliance guest for the module: (name, id, token). Closed (VM and files gone) at the end."""
    name = f"display-{uuid.uuid4().hex[:8]}"
    status, grant = real_daemon.request("POST", "/api/v1/sessions", {"name": name, "secret": SECRET})
    assert status == 201, grant
    session_id, token = grant["session"]["id"], grant["token"]
    for action, body in (("open", {"cpus": 1, "memory": 256, "disk": 64, "version": "appliance"}),
                         ("start", {"userData": "#!/bin/sh\necho display test\n"})):
        status, reply = real_daemon.request("POST", f"/api/v1/sessions/{session_id}/{action}", body, token=token)
        assert status == 202, reply
        status, operation = real_daemon.request(
            "GET", f"/api/v1/operations/{reply['operation']['id']}/wait?timeout=120", token=token)
        assert operation["status"] == "succeeded", (operation, real_daemon.log())
    try:
        yield name, session_id, token
    finally:
        real_daemon.request("POST", f"/api/v1/sessions/{session_id}/close", {}, token=token)


def display_url(daemon, session_id, query):
    return daemon.url.replace("http://", "ws://") + f"/api/v1/sessions/{session_id}/display?{query}"


class Viewer:
    """A raw display client speaking just enough RFB to prove the connection works."""

    def __init__(self, url, **options):
        self.socket = websocket.create_connection(url, timeout=30, **options)
        self.buffer = b""

    def read(self, count):
        while len(self.buffer) < count:
            opcode, data = self.socket.recv_data(control_frame=False)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionError(f"closed: {data!r}")
            self.buffer += data
        chunk, self.buffer = self.buffer[:count], self.buffer[count:]
        return chunk

    def handshake(self):
        """RFB 3.8 with no authentication (QEMU's socket has none); returns the screen's (width, height)."""
        assert self.read(12).startswith(b"RFB 003.")
        self.socket.send_binary(b"RFB 003.008\n")
        types = self.read(self.read(1)[0])
        assert 1 in types, types
        self.socket.send_binary(b"\x01")
        assert self.read(4) == b"\0\0\0\0", "security result: OK"
        self.socket.send_binary(b"\x00")  # asks for exclusive access: the daemon makes every viewer shared
        init = self.read(24)
        width, height = struct.unpack(">HH", init[:4])
        self.read(struct.unpack(">I", init[20:24])[0])
        return width, height

    def close(self):
        self.socket.close()


def close_frame(socket):
    """(code, reason) of the close frame the daemon sends next, skipping data."""
    while True:
        frame = socket.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack(">H", frame.data[:2])[0], frame.data[2:].decode()


def test_a_page_shows_the_guests_screen_and_a_screenshot(real_daemon, guest, page_server, browser, artifact):
    name, session_id, token = guest
    real_daemon.ctl("origins", "approve", page_server)
    browser.navigate(f"{page_server}/display.html?daemon={real_daemon.url}&name={name}&secret={SECRET}")
    report = browser.wait_for("['displayed', 'failed'].includes(window.report.phase) && window.report", 90, "the display to connect")
    assert report["phase"] == "displayed", (report.get("failure"), real_daemon.log()[-3000:])
    assert report["stateName"] == "running"
    assert report["displayURL"] == f"{real_daemon.url}/#display={session_id}"

    # The canvas shows the guest's VGA text console: pixels that are not black.
    pixels = browser.wait_for("(p => p && p.nonBlank > 0 && p)(window.displayPixels())", 60, "guest pixels on the canvas")
    assert pixels["width"] >= 640 and pixels["height"] >= 400, pixels
    print(f"\nscreenshot of the display page: {browser.screenshot(artifact('display-page.png'))}")

    # session.screenshot(): a PNG the browser decodes, of the same screen.
    shot = browser.evaluate("window.takeScreenshot()")
    assert shot["type"] == "image/png"
    assert (shot["width"], shot["height"]) == (pixels["width"], pixels["height"]), shot
    assert shot["nonBlank"] > 0, shot

    # The display's WebSocket from the page: a wrong token never opens, the session's token does.
    assert report["wrongToken"]["opened"] is False, report["wrongToken"]
    assert report["rightToken"]["opened"] is True, report["rightToken"]


def test_a_screenshot_is_a_png_of_the_screen_and_409_without_a_running_vm(real_daemon, guest, artifact):
    _, session_id, token = guest
    request = urllib.request.Request(
        real_daemon.url + f"/api/v1/sessions/{session_id}/screenshot", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"] == "image/png"
        png = response.read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 640 and height >= 400
    with open(artifact("screenshot.png"), "wb") as f:
        f.write(png)

    status, grant = real_daemon.request("POST", "/api/v1/sessions", {"name": f"idle-{uuid.uuid4().hex[:8]}", "secret": "s"})
    idle_id, idle_token = grant["session"]["id"], grant["token"]
    assert grant["session"].get("displayURL") is None, "no display before the VM runs"
    status, error = real_daemon.request("GET", f"/api/v1/sessions/{idle_id}/screenshot", token=idle_token)
    assert status == 409 and error["error"]["code"] == "invalid_state", error
    status, error = real_daemon.request("GET", f"/api/v1/sessions/{idle_id}/display", token=idle_token)
    assert status == 409 and error["error"]["code"] == "invalid_state", error


def test_the_display_refuses_a_wrong_token_and_an_unapproved_origin(real_daemon, guest):
    """A refused upgrade is a bare 400 (hummingbird-websocket 2.8.1 answers a failed upgrade itself); the same
    URL without the upgrade gives the JSON reason, which is what vmsession.js reports."""
    _, session_id, token = guest
    url = f"/api/v1/sessions/{session_id}/display"
    for query, origin, status, code in (
            ("token=wrong", None, 401, "unauthorized"),
            (f"token={token}", "http://127.0.0.1:9", 403, "origin_not_approved"),
            (f"token={token}&mode=typing", None, 400, "invalid_argument")):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            Viewer(display_url(real_daemon, session_id, query), **({"origin": origin} if origin else {}))
        assert refused.value.status_code == 400, (query, origin)
        status_seen, error = real_daemon.request("GET", f"{url}?{query}", headers={"Origin": origin} if origin else None)
        assert (status_seen, error["error"]["code"]) == (status, code), error
    # The right token and no upgrade: the same URL says what it is.
    status, error = real_daemon.request("GET", url, token=token)
    assert status == 400 and error["error"]["code"] == "invalid_usage", error
    assert "WebSocket" in error["error"]["message"]


def test_an_oversized_frame_closes_that_viewer_only(real_daemon, guest):
    _, session_id, token = guest
    calm = Viewer(display_url(real_daemon, session_id, f"token={token}"))
    reader = Viewer(display_url(real_daemon, session_id, f"token={token}&mode=read"))
    rogue = Viewer(display_url(real_daemon, session_id, f"token={token}"))
    try:
        rogue.socket.send_binary(b"\0" * (100 << 10))
        code, _ = close_frame(rogue.socket)
        assert code == 1009, "message too big"
        # The others were not disturbed: both complete the RFB handshake now, as shared clients.
        assert calm.handshake()[0] >= 640
        assert reader.handshake()[0] >= 640
        # A read-only viewer that types has its keys dropped, not its connection: a screen update still comes.
        reader.socket.send_binary(bytes([4, 1, 0, 0, 0, 0, 0, 0x61]))  # KeyEvent 'a' down
        reader.socket.send_binary(bytes([3, 0, 0, 0, 0, 0, 0, 16, 0, 16]))  # FramebufferUpdateRequest 16x16
        assert reader.read(1) == b"\x00", "a FramebufferUpdate"
        # Bytes the read-only filter cannot parse end that viewer with a reason.
        reader.socket.send_binary(bytes([99, 0, 0, 0]))
        code, reason = close_frame(reader.socket)
        assert code == 1008 and "unknown RFB message" in reason, (code, reason)
        calm.socket.send_binary(bytes([3, 0, 0, 0, 0, 0, 0, 16, 0, 16]))
        assert calm.read(1) == b"\x00"
    finally:
        for viewer in (calm, reader, rogue):
            viewer.close()


def test_a_viewer_that_stops_reading_is_dropped_and_the_others_go_on(real_daemon, guest):
    """A viewer asks for full screens without end and never reads them: once its socket buffers are full and
    the daemon's write to it has waited 10 s, it is dropped; a viewer beside it is served throughout."""
    _, session_id, token = guest
    calm = Viewer(display_url(real_daemon, session_id, f"token={token}"))
    stuck = Viewer(display_url(real_daemon, session_id, f"token={token}"))
    try:
        calm.handshake()
        stuck.handshake()
        stuck.socket.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        full_screen = bytes([3, 0, 0, 0, 0, 0, 0x02, 0xd0, 0x01, 0x90])  # non-incremental 720x400
        deadline = time.monotonic() + 60
        dropped = False
        while time.monotonic() < deadline and not dropped:
            try:
                stuck.socket.send_binary(full_screen)
            except (OSError, websocket.WebSocketException):
                dropped = True  # the daemon closed the connection
            time.sleep(0.02)
            if int(time.monotonic() * 50) % 100 == 0:  # about every 2 s: the calm viewer still gets its update
                calm.socket.send_binary(bytes([3, 1, 0, 0, 0, 0, 0, 16, 0, 16]))
        assert dropped, "a viewer that never reads was not dropped within 60 s"
        # What it had not read ends with the daemon's close frame (or the connection's end): it is gone.
        stuck.socket.settimeout(30)
        ended = None
        try:
            while ended is None:
                frame = stuck.socket.recv_frame()
                if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                    ended = struct.unpack(">H", frame.data[:2])[0], frame.data[2:].decode()
        except (OSError, websocket.WebSocketException):
            ended = "connection closed"
        print(f"\nthe stuck viewer ended with {ended}")
        calm.buffer = b""
        calm.socket.settimeout(30)
        calm.socket.send_binary(bytes([3, 0, 0, 0, 0, 0, 0, 16, 0, 16]))
        # The calm viewer's connection is alive: reading on eventually yields data and no close.
        opcode, data = calm.socket.recv_data(control_frame=False)
        assert opcode == websocket.ABNF.OPCODE_BINARY and data
    finally:
        calm.close()
        stuck.close()


def test_the_displayURL_opens_the_daemons_page_on_that_display(real_daemon, guest, browser, artifact):
    _, session_id, token = guest
    status, shown = real_daemon.request("GET", f"/api/v1/sessions/{session_id}", token=token)
    assert shown["displayURL"] == f"/#display={session_id}"
    browser.navigate(real_daemon.url + shown["displayURL"])
    browser.wait_for("document.getElementById('daemon').textContent.startsWith('vmsessiond ')", 30, "the page to reach the daemon")
    browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(real_daemon.admin_token)};"
        "document.getElementById('token-form').requestSubmit(); true")
    # The page opens that session's display by itself, under its own strict Content-Security-Policy.
    browser.wait_for("!document.getElementById('display-section').hidden", 30, "the display section")
    pixels = ("(c => c && c.width && (() => { const x = document.createElement('canvas'); x.width = c.width; x.height = c.height;"
              " const g = x.getContext('2d'); g.drawImage(c, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;"
              " let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 0) n++; return n; })())"
              "(document.querySelector('#display-screen canvas'))")
    assert browser.wait_for(pixels, 60, "the guest's pixels on the daemon's page") > 0
    print(f"\nscreenshot of the daemon's page with the display: {browser.screenshot(artifact('daemon-page-display.png'))}")


def test_revoking_a_token_closes_the_viewers_it_opened(real_daemon, guest):
    name, session_id, token = guest
    status, grant = real_daemon.request("POST", "/api/v1/sessions", {"name": name, "secret": SECRET})
    assert status == 200, grant
    second = grant["token"]
    kept = Viewer(display_url(real_daemon, session_id, f"token={token}"))
    revoked = Viewer(display_url(real_daemon, session_id, f"token={second}"))
    try:
        kept.handshake()
        revoked.handshake()
        status, _ = real_daemon.request("DELETE", f"/api/v1/sessions/{session_id}/token", token=second)
        assert status == 204
        revoked.socket.settimeout(15)
        code, reason = close_frame(revoked.socket)
        assert code == 1008 and "revoked" in reason, (code, reason)
        kept.socket.send_binary(bytes([3, 0, 0, 0, 0, 0, 0, 16, 0, 16]))
        assert kept.read(1) == b"\x00", "the other token's viewer goes on"
    finally:
        kept.close()
        revoked.close()
