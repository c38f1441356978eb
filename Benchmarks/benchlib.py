"""What the benchmarks share: a JSON client for the daemon, waiting, and CPU shares read from /proc."""
import json, os, time
import urllib.request, urllib.error

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU time of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_share(pid, seconds):
    """The share of one core a process used over the next `seconds`."""
    start_wall, start_cpu = time.monotonic(), cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start_wall)


def wait(what, predicate, timeout=180, interval=0.05):
    """The first truthy value of `predicate`, polled until `timeout` seconds; an error naming `what` after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def qemu_pid(session_id):
    """The pid of the QEMU that runs a session's VM (libvirt names the guest vms-<session>), or None."""
    needle = f"guest=vms-{session_id},".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if needle in f.read():
                        return int(entry)
            except OSError:
                pass
    return None


class API:
    """The daemon's REST API on 127.0.0.1:`port`; `token` is sent unless a call gives another."""

    def __init__(self, port, token=None):
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def call(self, method, path, body=None, token=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        token = token or self.token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path}: {error.code} {error.read().decode()}") from None
