#!/usr/bin/env python3
"""The serial console under load, on real parts (make bench; QUICK=1 for a short run).

The real vmsessiond (embedded QEMU driver, TCG) runs one chatty appliance guest whose user-data prints a
numbered line every few milliseconds to its serial console. Then, for 1 and for 50 read-only console
clients (WebSocket, each in a thread of its own), it measures over a window:
  - bytes delivered to each client, against the bytes QEMU appended to the console log in that window
    (the peer: reading QEMU's own log file directly, polled every 0.5 ms, in the same run);
  - latency from a line's appearance in the log (the peer's clock) to its arrival at each client:
    p50, p99, max; the ratio of 50 clients' p99 to one client's, in the same run;
  - the daemon's CPU (% of a core) while it serves them, beside the guest's QEMU;
  - lines lost: a line of the window that a client never got (one that comes late, up to 15 s after the
    window, counts in the latency instead). A lost line fails the run, QUICK or not: it is a bug, not a speed.
Prints a table and writes --out as JSON. Everything it starts (daemon, VM, temp dirs) is torn down.
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, threading, time

import websocket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import API, cpu_seconds, qemu_pid, wait  # noqa: E402

QUICK = os.environ.get("QUICK", "") not in ("", "0")
WINDOW = 4 if QUICK else 20
COUNTS = [1, 50]
LINE = re.compile(rb"tick (\d+) [0-9a-z]+\r?\n")
# About 100 lines of 64 bytes a second: a guest that logs busily, not a flood.
USER_DATA = ("#!/bin/sh\ni=0\nwhile :; do echo \"tick $i 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdef\"; "
             "i=$((i+1)); usleep 10000; done >/dev/ttyS0\n")


class LogPeer(threading.Thread):
    """Reads QEMU's console log directly, as fast as it can poll: when each tick line first appeared."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.seen, self.bytes, self.running = path, {}, 0, True
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            self.offset = f.tell()

    def run(self):
        pending = b""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while self.running:
                chunk = f.read()
                if not chunk:
                    time.sleep(0.0005)
                    continue
                now = time.monotonic()
                self.bytes += len(chunk)
                pending += chunk
                for match in LINE.finditer(pending):
                    self.seen.setdefault(int(match.group(1)), now)
                pending = pending[pending.rfind(b"\n") + 1:]


class Viewer(threading.Thread):
    """One read-only console client: when each tick line arrived, and how many bytes came."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.socket = websocket.create_connection(url, timeout=30)
        opcode, hello = self.socket.recv_data(control_frame=False)
        self.history = json.loads(hello)["history"]
        self.arrived, self.bytes, self.running, self.skip = {}, 0, True, self.history

    def run(self):
        pending = b""
        try:
            while self.running:
                opcode, data = self.socket.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return
                if opcode != websocket.ABNF.OPCODE_BINARY:
                    continue
                now = time.monotonic()
                if self.skip:  # the history: not live output
                    taken = min(self.skip, len(data))
                    self.skip -= taken
                    data = data[taken:]
                self.bytes += len(data)
                pending += data
                for match in LINE.finditer(pending):
                    self.arrived.setdefault(int(match.group(1)), now)
                pending = pending[pending.rfind(b"\n") + 1:]
        except (OSError, websocket.WebSocketException):
            return

    def close(self):
        self.running = False
        try:
            self.socket.close()
        except Exception:
            pass


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def measure(port, session_id, token, log_path, daemon_pid, guest_pid, count):
    url = f"ws://127.0.0.1:{port}/api/v1/sessions/{session_id}/console?token={token}&mode=read"
    viewers = [Viewer(url) for _ in range(count)]
    for viewer in viewers:
        viewer.start()
    time.sleep(1)  # past the history
    peer = LogPeer(log_path)
    peer.start()
    start_bytes = [v.bytes for v in viewers]
    daemon_cpu, guest_cpu, wall = cpu_seconds(daemon_pid), cpu_seconds(guest_pid), time.monotonic()
    time.sleep(WINDOW)
    daemon_cpu, guest_cpu = cpu_seconds(daemon_pid) - daemon_cpu, cpu_seconds(guest_pid) - guest_cpu
    wall = time.monotonic() - wall
    peer.running = False
    end_bytes = [v.bytes for v in viewers]
    peer.join(timeout=5)
    window_lines = sorted(peer.seen)[:-5]  # the last few may have reached the log only as the window closed
    # What was in flight at the window's end arrives: a line that comes late counts in the latency; only a
    # line that never comes (while the viewer got later ones) is lost.
    drain = time.monotonic() + 15
    while window_lines and time.monotonic() < drain and \
            not all(window_lines[-1] in viewer.arrived for viewer in viewers):
        time.sleep(0.05)
    for viewer in viewers:
        viewer.close()
    latencies, lost = [], 0
    for viewer in viewers:
        for line in window_lines:
            if line in viewer.arrived:
                latencies.append((viewer.arrived[line] - peer.seen[line]) * 1000)
            else:
                lost += 1
    delivered = [end - start for end, start in zip(end_bytes, start_bytes)]
    return {
        "clients": count, "windowSeconds": round(wall, 2), "lines": len(window_lines), "linesLost": lost,
        "logBytes": peer.bytes, "bytesPerClientMin": min(delivered), "bytesPerClientMax": max(delivered),
        "latencyMs": {"p50": round(percentile(latencies, 0.5), 2), "p99": round(percentile(latencies, 0.99), 2),
                      "max": round(max(latencies), 2) if latencies else None},
        "daemonCPUPercent": round(100 * daemon_cpu / wall, 2), "guestCPUPercent": round(100 * guest_cpu / wall, 2),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--appliance", required=True)
    parser.add_argument("--out")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="vms-console-bench-")
    log = open(f"{workdir}/daemon.log", "w")
    process = subprocess.Popen(
        [args.binary, "--listen", "127.0.0.1:0", "--state-dir", f"{workdir}/state", "--accelerator", "tcg",
         "--appliance-dir", args.appliance, "--stop-grace", "5"], stdout=log, stderr=subprocess.STDOUT)
    session_id, api = None, None
    try:
        def listening():
            if process.poll() is not None:
                raise RuntimeError("vmsessiond exited:\n" + open(f"{workdir}/daemon.log").read())
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(f"{workdir}/daemon.log").read())
            return match and int(match.group(1))
        port = wait("the daemon to listen", listening, timeout=60)
        api = API(port)
        grant = api.call("POST", "/api/v1/sessions", {"name": "console-bench", "secret": "s3cret"})
        session_id, api.token = grant["session"]["id"], grant["token"]
        session = f"/api/v1/sessions/{session_id}"
        api.call("POST", session + "/open", {"memory": 256, "disk": 64})
        wait("open", lambda: api.call("GET", session)["state"] == "open")
        api.call("POST", session + "/start", {"userData": USER_DATA})
        log_path = f"{workdir}/state/machines/{session_id}/console.log"
        wait("the chatty guest", lambda: os.path.exists(log_path) and b"tick 20 " in open(log_path, "rb").read())
        guest_pid = wait("qemu", lambda: qemu_pid(session_id))
        results = [measure(port, session_id, api.token, log_path, process.pid, guest_pid, count) for count in COUNTS]
    finally:
        if session_id:
            try:
                api.call("POST", f"/api/v1/sessions/{session_id}/close")
                wait("close", lambda: api.call("GET", f"/api/v1/sessions/{session_id}")["state"] == "closed", 60)
            except Exception as error:
                print(f"close: {error}", file=sys.stderr)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        if session_id and qemu_pid(session_id):
            os.kill(qemu_pid(session_id), signal.SIGKILL)
        log.close()
        subprocess.run(["rm", "-rf", workdir])

    one, many = results
    print(f"\nconsole: one chatty TCG guest, read-only clients over {WINDOW} s windows"
          f"{' (QUICK: a short run, numbers not to be judged)' if QUICK else ''}")
    print(f"{'clients':>8} {'log B/s':>9} {'B/client (min..max)':>22} {'lost':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'daemon CPU':>10} {'guest CPU':>9}")
    for r in results:
        print(f"{r['clients']:>8} {r['logBytes'] / r['windowSeconds']:>9.0f} "
              f"{str(r['bytesPerClientMin']) + '..' + str(r['bytesPerClientMax']):>22} {r['linesLost']:>5} "
              f"{r['latencyMs']['p50']:>7} {r['latencyMs']['p99']:>7} {r['latencyMs']['max']:>7} "
              f"{r['daemonCPUPercent']:>9}% {r['guestCPUPercent']:>8}%")
    ratio = many["latencyMs"]["p99"] / one["latencyMs"]["p99"] if one["latencyMs"]["p99"] else float("nan")
    print(f"p99 latency, 50 clients / 1 client (same run): {ratio:.2f}; "
          f"bytes per client / bytes the log got: {many['bytesPerClientMin'] / max(1, many['logBytes']):.3f} (min of 50)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"quick": QUICK, "results": results, "p99Ratio50To1": ratio}, f, indent=2)
    if many["linesLost"] or one["linesLost"]:
        sys.exit(f"console clients missed lines: {one['linesLost']} (1 client), {many['linesLost']} (50 clients)")


if __name__ == "__main__":
    main()
