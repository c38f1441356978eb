"""A stand-in for a guest's HTTP API (its port 80 behind the daemon's forward), and optionally for its VNC
display socket, for tests that need a guest that misbehaves on cue without booting one. Shared by the
browser tests (imported) and the Swift end-to-end tests (run as `python3 standin_guest.py PORT ...`).

  GET /           200, a little JSON (what the daemon's probe asks)
  GET /page.html  a guest page that tries to reach the daemon's origin: registers a service worker, reads
                  sessionStorage, cookies and the daemon's page, and reports in `window.report`
  GET /sw.js      a service worker's script
  GET /stall      its head and a first chunk (`first chunk;`), then nothing until the server stops
  anything else   404
Every request's method, target and headers are appended, one JSON object a line, to the record file.
With --vnc PATH it also listens on that Unix socket and holds every connection without a word: a display
whose viewer waits forever.
"""

import argparse
import http.server
import json
import os
import signal
import socket
import threading

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>guest page</title></head>
<body><h1>guest page</h1>
<script>
window.report = {phase: 'running'};
(async () => {
  const r = window.report;
  const attempt = async (name, action) => {
    try { r[name] = {ok: true, value: String(await action())}; }
    catch (e) { r[name] = {ok: false, error: e.name + ': ' + e.message}; }
  };
  r.origin = String(self.origin);
  await attempt('sessionStorage', () => sessionStorage.getItem('vmsessiond.adminToken'));
  await attempt('localStorage', () => localStorage.getItem('x'));
  await attempt('cookie', () => document.cookie);
  await attempt('serviceWorker', async () => {
    if (!navigator.serviceWorker) throw new Error('no serviceWorker API here');
    const registration = await navigator.serviceWorker.register('sw.js', {scope: './'});
    return registration.scope;
  });
  await attempt('daemonPage', async () => {
    const response = await fetch('/', {credentials: 'include'});
    return response.status + ' ' + (await response.text()).slice(0, 200);
  });
  await attempt('daemonAPI', async () => {
    const response = await fetch('/api/v1/sessions', {credentials: 'include'});
    return response.status + ' ' + (await response.text()).slice(0, 200);
  });
  await attempt('opener', () => window.opener && window.opener.location.href);
  r.phase = 'done';
})();
</script></body></html>
"""

SERVICE_WORKER = b"self.addEventListener('fetch', (event) => event.respondWith(new Response('served by the guest')));\n"


def make_handler(record_path, stop):
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

        def do_GET(self):
            if record_path:
                entry = {"method": self.command, "target": self.path, "headers": [[k, v] for k, v in self.headers.items()]}
                with lock, open(record_path, "a") as f:
                    f.write(json.dumps(entry) + "\n")
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._send(200, "application/json", b"{\"guest\": \"stand-in\"}\n")
            elif path == "/page.html":
                self._send(200, "text/html; charset=utf-8", PAGE, {"Service-Worker-Allowed": "/"})
            elif path == "/sw.js":
                self._send(200, "text/javascript", SERVICE_WORKER, {"Service-Worker-Allowed": "/"})
            elif path == "/stall":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                self.wfile.write(b"first chunk;")
                self.wfile.flush()
                stop.wait()
            else:
                self._send(404, "text/plain", b"no such page on the guest\n")

        def _send(self, status, content_type, body, extra=None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


class UnixHTTPServer(http.server.ThreadingHTTPServer):
    """The same server on a Unix socket (a guest forward that is a socket path rather than a port)."""
    address_family = socket.AF_UNIX

    def server_bind(self):
        socket.socket.bind(self.socket, self.server_address)
        self.server_name, self.server_port = "guest", 80

    def get_request(self):
        connection, _ = self.socket.accept()
        return connection, ("guest", 0)


class StandInGuest:
    """The server on 127.0.0.1:`port`, or on the Unix socket at `port` if it is a path (and the display
    socket), in threads of this process."""

    def __init__(self, port, record_path=None, vnc_path=None):
        self.stop_event = threading.Event()
        self.record_path = record_path
        handler = make_handler(record_path, self.stop_event)
        if isinstance(port, str) and not port.isdigit():
            self.server = UnixHTTPServer(port, handler)
        else:
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
        self.server.daemon_threads = True
        self.threads = [threading.Thread(target=self.server.serve_forever, daemon=True)]
        self.vnc = None
        self.held = []
        if vnc_path:
            os.makedirs(os.path.dirname(vnc_path), exist_ok=True)
            self.vnc = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.vnc.bind(vnc_path)
            self.vnc.listen(16)
            self.threads.append(threading.Thread(target=self._hold_display, daemon=True))
        for thread in self.threads:
            thread.start()

    def _hold_display(self):
        while not self.stop_event.is_set():
            try:
                connection, _ = self.vnc.accept()
            except OSError:
                return
            self.held.append(connection)

    def requests(self):
        """What the guest was sent so far: a list of {method, target, headers}."""
        if not self.record_path or not os.path.exists(self.record_path):
            return []
        with open(self.record_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def close(self):
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
        if self.vnc:
            self.vnc.close()
        for connection in self.held:
            connection.close()


if __name__ == "__main__":
    # A parent that blocks SIGTERM in the thread that started us (a test runner's) passes the mask on.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", help="a TCP port on 127.0.0.1, or a Unix socket's path")
    parser.add_argument("--record")
    parser.add_argument("--vnc")
    arguments = parser.parse_args()
    guest = StandInGuest(arguments.port, arguments.record, arguments.vnc)
    print("stand-in guest ready", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        guest.close()
