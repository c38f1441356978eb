"""Fixtures of the browser tests: the real vmsessiond (libvirt's test driver), a static server for the
test page on another loopback origin, and a headless Chromium. Each is torn down with everything it made."""

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from cdp import Chromium

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ARTIFACTS = os.path.join(ROOT, "artifacts", "browser")


def binary(variable, name):
    """A binary the Makefile names, else the debug build's."""
    path = os.environ.get(variable) or os.path.join(ROOT, ".build", "debug", name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not built; run `make build-tests` (or set {variable})")
    return path


class Daemon:
    """The real vmsessiond on a free port, with libvirt's test driver and a stand-in appliance."""

    def __init__(self, environment=None):
        self.environment = {**os.environ, **(environment or {})}
        self.directory = tempfile.mkdtemp(prefix="vms-browser-")
        self.state_dir = os.path.join(self.directory, "state")
        appliance = os.path.join(self.directory, "appliance")
        os.makedirs(appliance)
        for name in ("vmlinuz", "initrd.img"):
            with open(os.path.join(appliance, name), "wb") as f:
                f.write(b"\0")
        self.appliance = appliance
        self.log_path = os.path.join(self.directory, "daemon.log")
        self._log = open(self.log_path, "ab")
        self.port = self._start("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{self.port}"
        with open(os.path.join(self.state_dir, "admin-token")) as f:
            self.admin_token = f.read().strip()

    def _start(self, listen):
        start = os.path.getsize(self.log_path)
        self.process = subprocess.Popen(
            [binary("VMSESSIOND_BINARY", "vmsessiond"), "--listen", listen, "--state-dir", self.state_dir,
             "--libvirt-uri", "test:///default", "--appliance-dir", self.appliance],
            stdout=self._log, stderr=self._log, env=self.environment)
        return self._wait_listening(start, timeout=60)

    def restart(self):
        """Stops the daemon (SIGTERM) and starts it again on the same port and state directory."""
        self._terminate()
        self._start(f"127.0.0.1:{self.port}")

    def _wait_listening(self, start, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                f.seek(start)
                match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", f.read())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise RuntimeError(f"vmsessiond exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"vmsessiond did not listen within {timeout} s; see {self.log_path}")

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None, token=None, headers=None):
        """One API call without a browser: (status, JSON)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=dict(headers or {}))
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def ctl(self, *arguments):
        """vmsessionctl against this daemon, with its admin token from the state directory."""
        result = subprocess.run(
            [binary("VMSESSIONCTL_BINARY", "vmsessionctl"), *arguments, "--url", self.url, "--state-dir", self.state_dir],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"vmsessionctl {' '.join(arguments)} failed:\n{result.stdout}{result.stderr}"
        return result.stdout

    def stop(self):
        self._terminate()
        self._log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _terminate(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class RealDaemon(Daemon):
    """vmsessiond on the embedded QEMU driver with the real appliance, guests under TCG."""

    def __init__(self, appliance, environment=None):
        self.real_appliance = appliance
        super().__init__(environment)

    def _start(self, listen):
        start = os.path.getsize(self.log_path)
        self.process = subprocess.Popen(
            [binary("VMSESSIOND_BINARY", "vmsessiond"), "--listen", listen, "--state-dir", self.state_dir,
             "--appliance-dir", self.real_appliance, "--accelerator", "tcg", "--stop-grace", "5"],
            stdout=self._log, stderr=self._log, env=self.environment)
        return self._wait_listening(start, timeout=60)


@contextlib.contextmanager
def running_real_daemon(environment=None):
    """A RealDaemon for a module; at the end every session it still has is closed, so that no qemu outlives it."""
    appliance = os.environ.get("VMSESSIOND_TEST_APPLIANCE") or os.path.join(ROOT, ".cache", "appliance")
    if not os.path.exists(os.path.join(appliance, "vmlinuz")):
        pytest.fail(f"no appliance in {appliance}; run `make appliance` (or set VMSESSIOND_TEST_APPLIANCE)")
    daemon = RealDaemon(appliance, environment)
    try:
        yield daemon
    finally:
        # Close every session it still has, so that no qemu outlives the tests.
        status, listed = daemon.request("GET", "/api/v1/sessions", token=daemon.admin_token)
        for session in (listed or {}).get("sessions", []) if status == 200 else []:
            daemon.request("POST", f"/api/v1/sessions/{session['id']}/close", {}, token=daemon.admin_token)
        daemon.stop()


@pytest.fixture(scope="module")
def real_daemon():
    with running_real_daemon() as daemon:
        yield daemon


# The client as a site vendors it: the file of the source tree (VMSESSION_JS: another copy, e.g. an older one).
CLIENT = os.environ.get("VMSESSION_JS") or os.path.join(ROOT, "Sources", "VMSessionAPI", "Web", "vmsession.js")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def translate_path(self, path):
        # The test pages' own copy of vmsession.js, served from their origin.
        if path.split("?", 1)[0] == "/vmsession.js":
            return CLIENT
        return super().translate_path(path)

    def end_headers(self):
        # no-cache (revalidated) for the page of the back/forward cache test: Chromium keeps no no-store page.
        self.send_header("Cache-Control", "no-cache" if self.path.startswith("/tabs.html") else "no-store")
        super().end_headers()


@pytest.fixture(scope="module")
def daemon():
    daemon = Daemon()
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def serving_pages():
    """The test pages, served from 127.0.0.1 on a port of their own: an origin other than the daemon's."""
    directory = os.path.join(os.path.dirname(__file__), "page")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=directory))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def serving_public_pages():
    """The test pages over HTTPS (a self-signed certificate) and over plain HTTP, each on a port of its own
    that Chromium is told is a public address: a site on the internet, as far as Local Network Access goes.
    Yields (https origin, http origin, Chromium's arguments); the pages are reached as `page.test`, mapped to
    127.0.0.1, so that they are not on the loopback by name either."""
    directory = os.path.join(os.path.dirname(__file__), "page")
    scratch = tempfile.mkdtemp(prefix="vms-public-")
    key, certificate = os.path.join(scratch, "key.pem"), os.path.join(scratch, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", certificate,
                    "-days", "2", "-subj", "/CN=page.test"], check=True, capture_output=True, timeout=60)
    handler = functools.partial(QuietHandler, directory=directory)
    secure = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in (secure, plain)]
    for thread in threads:
        thread.start()
    ports = secure.server_address[1], plain.server_address[1]
    arguments = ["--ignore-certificate-errors", "--host-resolver-rules=MAP page.test 127.0.0.1",
                 f"--ip-address-space-overrides=127.0.0.1:{ports[0]}=public,127.0.0.1:{ports[1]}=public"]
    try:
        yield f"https://page.test:{ports[0]}", f"http://page.test:{ports[1]}", arguments
    finally:
        for server in (secure, plain):
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def public_site():
    with serving_public_pages() as site:
        yield site


@pytest.fixture(scope="module")
def page_server():
    with serving_pages() as origin:
        yield origin


@pytest.fixture
def browser():
    chromium = Chromium()
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def artifact():
    """A path under artifacts/browser/ for a file a person may want to look at after the run."""
    def path(name):
        os.makedirs(ARTIFACTS, exist_ok=True)
        return os.path.join(ARTIFACTS, name)
    return path
