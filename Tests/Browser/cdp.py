"""A headless Chromium driven over the Chrome DevTools Protocol: just what the browser tests need
(navigate, evaluate, wait for a condition, screenshot), with every wait bounded."""

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import websocket


class BrowserError(AssertionError):
    """The browser did not do what the test waited for; carries the page's console output."""


class Tab:
    """One page target over its own DevTools WebSocket: navigate, evaluate, wait, click."""

    def __init__(self, socket_url):
        self.console = []
        self._next_id = 0
        self.ws = websocket.create_connection(socket_url, timeout=30, suppress_origin=True)
        self.call("Runtime.enable")
        self.call("Page.enable")

    def call(self, method, timeout=30, **params):
        """Sends one CDP command and returns its result; events that arrive meanwhile are kept as console lines."""
        self._next_id += 1
        request_id = self._next_id
        self.ws.send(json.dumps({"id": request_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no answer to {method} within {timeout} s")
            self.ws.settimeout(remaining)
            message = json.loads(self.ws.recv())
            if message.get("id") == request_id:
                if "error" in message:
                    raise BrowserError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            self._note(message)

    def _note(self, message):
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")

    def navigate(self, url):
        self.call("Page.navigate", url=url)

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (JSON-serialisable values only)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression, timeout, what):
        """Polls `expression` until it is truthy and returns its value; fails with `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None  # the page is still loading
            if value:
                return value
            time.sleep(0.2)
        console = "\n".join(self.console[-30:])
        raise BrowserError(f"timed out after {timeout} s waiting for {what}; last value {value!r}; console:\n{console}")

    def type_text(self, text):
        """Types `text` with Chromium's own key events into whatever has the focus, as a person's keyboard
        would (keydown, keypress, keyup per character; a newline is the Enter key)."""
        for character in text:
            if character == "\n":
                key = dict(key="Enter", code="Enter", windowsVirtualKeyCode=13, nativeVirtualKeyCode=13, text="\r")
            else:
                key = dict(key=character, text=character, unmodifiedText=character)
            self.call("Input.dispatchKeyEvent", type="keyDown", **key)
            self.call("Input.dispatchKeyEvent", type="keyUp", **{k: v for k, v in key.items() if k not in ("text", "unmodifiedText")})

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass

    def click(self, selector):
        """A real mouse click (the page gets a user activation) in the middle of the element `selector`."""
        box = self.wait_for(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
                            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()",
                            30, f"{selector} on the page")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)


class Chromium(Tab):
    """One headless Chromium process with a throw-away profile, and its first page over CDP."""

    def __init__(self, executable=None, window=(1280, 1000), arguments=()):
        self.executable = executable or os.environ.get("CHROMIUM") or shutil.which("chromium") or "chromium"
        self.profile = tempfile.mkdtemp(prefix="vms-chromium-")
        self.log_path = os.path.join(self.profile, "chromium.log")
        self.console = []
        arguments = [
            self.executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            f"--user-data-dir={self.profile}", "--remote-debugging-port=0", f"--window-size={window[0]},{window[1]}",
            *arguments, "about:blank",
        ]
        self._log = open(self.log_path, "wb")
        # Its own process group, so that closing it ends its helper processes too.
        self.process = subprocess.Popen(arguments, stdout=self._log, stderr=self._log, start_new_session=True)
        try:
            self.port = self._devtools_port(timeout=60)
            Tab.__init__(self, self._page_socket(timeout=30))
            self.tabs = []
        except BaseException:
            self.close()
            raise

    def open_tab(self, url):
        """Another tab (a page target of its own) showing `url`."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?{url}", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            target = json.load(response)
        tab = Tab(target["webSocketDebuggerUrl"])
        self.tabs.append(tab)
        return tab

    def _devtools_port(self, timeout):
        marker = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(marker):
                with open(marker) as f:
                    first = f.readline().strip()
                if first.isdigit():
                    return int(first)
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}; see {self.log_path}:\n{self._log_tail()}")
            time.sleep(0.1)
        raise BrowserError(f"chromium did not open its DevTools port within {timeout} s; see {self.log_path}")

    def _page_socket(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as response:
                targets = json.load(response)
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise BrowserError(f"chromium showed no page target within {timeout} s")

    def _log_tail(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-4000:].decode(errors="replace")
        except OSError:
            return ""

    def close(self):
        for tab in getattr(self, "tabs", []):
            tab.close()
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
