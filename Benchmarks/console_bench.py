#!/usr/bin/env python3
"""The serial console under load, on real parts (make bench; QUICK=1 for a short run).

The real vmsessiond (embedded QEMU driver, TCG) runs one chatty appliance guest whose user-data prints a
numbered line every few milliseconds to its serial console. Then, for 1 and for 50 read-only console
clients (WebSocket), it measures over a window:
  - bytes delivered to each client, against the bytes QEMU appended to the console log in that window
    (the peer: reading QEMU's own log file directly, polled every 0.5 ms, in the same run);
  - latency from a line's appearance in the log (the peer's clock) to its arrival at each client:
    p50, p99, max; the ratio of 50 clients' p99 to one client's, in the same run;
  - the daemon's CPU (% of a core) while it serves them, beside the guest's QEMU and the client's own;
  - lines lost: a line of the window that a client never got (one that comes late, up to 15 s after the
    window, counts in the latency instead). A lost line fails the run, QUICK or not: it is a bug, not a speed.
The clients (--client, in the order given; both 1 and 50 viewers with each):
  - compiled (the default): `vmsessionbench-peer console-client` (--peer), all viewers in one poll loop and the log
    peer on a thread of its own, stamping on the same monotonic clock; it prints what it saw, this script does the
    arithmetic;
  - python: each viewer a thread of its own (websocket-client) and the log peer another, all under one interpreter
    lock, so at 50 viewers its latencies are partly the lock's. Kept to compare with earlier figures.
Prints a table and writes --out as JSON. Everything it starts (daemon, VM, client, temp dirs) is torn down.
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


def window_lines(seen):
    """The tick lines the log peer saw in the window, but the last few: they may have reached the log only as the
    window closed."""
    return sorted(seen)[:-5]


class CPUWindow:
    """The daemon's, QEMU's and the client's CPU time and the wall time between start() and stop()."""

    def __init__(self, daemon_pid, guest_pid, client_cpu):
        self.pids, self.client_cpu = (daemon_pid, guest_pid), client_cpu

    def start(self):
        self.begin = [cpu_seconds(pid) for pid in self.pids] + [self.client_cpu(), time.monotonic()]

    def stop(self):
        end = [cpu_seconds(pid) for pid in self.pids] + [self.client_cpu(), time.monotonic()]
        daemon, guest, client, wall = (b - a for a, b in zip(self.begin, end))
        return {"wall": wall, "daemonCPU": daemon, "guestCPU": guest, "clientCPU": client}


def python_window(url, log_path, cpu, count):
    """The Python client: a thread per viewer, and the log peer in another."""
    viewers = [Viewer(url) for _ in range(count)]
    for viewer in viewers:
        viewer.start()
    time.sleep(1)  # past the history
    peer = LogPeer(log_path)
    peer.start()
    start_bytes = [v.bytes for v in viewers]
    cpu.start()
    time.sleep(WINDOW)
    window = cpu.stop()
    peer.running = False
    end_bytes = [v.bytes for v in viewers]
    peer.join(timeout=5)
    lines = window_lines(peer.seen)
    # What was in flight at the window's end arrives: a line that comes late counts in the latency; only a
    # line that never comes (while the viewer got later ones) is lost.
    drain = time.monotonic() + 15
    while lines and time.monotonic() < drain and not all(lines[-1] in viewer.arrived for viewer in viewers):
        time.sleep(0.05)
    for viewer in viewers:
        viewer.close()
    return dict(window, seen=peer.seen, logBytes=peer.bytes, arrived=[v.arrived for v in viewers],
                startBytes=start_bytes, endBytes=end_bytes)


def compiled_window(peer_binary, url, log_path, cpu_of, count):
    """The compiled client: it prints `window-start` and `window-end` as its window opens and closes (the CPU is
    read around them), then what it saw as JSON, stamped in nanoseconds of CLOCK_MONOTONIC."""
    process = subprocess.Popen(
        [peer_binary, "console-client", f"--url={url}", f"--clients={count}", f"--log={log_path}",
         f"--window={WINDOW}", "--settle=1", "--drain=15"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        cpu = cpu_of(lambda: cpu_seconds(process.pid))
        for marker in ("window-start", "window-end"):
            line = process.stdout.readline().decode().strip()
            if line != marker:
                process.kill()
                raise RuntimeError(f"console-client: expected {marker}, got {line!r}: "
                                   f"{process.communicate()[1].decode(errors='replace')[-600:]}")
            if marker == "window-start":
                cpu.start()
            else:
                window = cpu.stop()
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"console-client failed: {err.decode(errors='replace')[-600:]}")
    report = json.loads(out)
    def stamps(pairs):
        return {line: ns / 1e9 for line, ns in pairs}
    viewers = report["viewers"]
    return dict(window, seen=stamps(report["log"]["seen"]), logBytes=report["log"]["bytes"],
                arrived=[stamps(v["arrived"]) for v in viewers], startBytes=[v["bytesAtStart"] for v in viewers],
                endBytes=[v["bytesAtEnd"] for v in viewers])


def summarize(client, count, raw):
    """What either client saw, in the same arithmetic: lines of the window, latencies, lost lines, bytes."""
    lines = window_lines(raw["seen"])
    latencies, lost = [], 0
    for arrived in raw["arrived"]:
        for line in lines:
            if line in arrived:
                latencies.append((arrived[line] - raw["seen"][line]) * 1000)
            else:
                lost += 1
    delivered = [end - start for end, start in zip(raw["endBytes"], raw["startBytes"])]
    wall = raw["wall"]
    return {
        "client": client, "clients": count, "windowSeconds": round(wall, 2), "lines": len(lines), "linesLost": lost,
        "logBytes": raw["logBytes"], "bytesPerClientMin": min(delivered), "bytesPerClientMax": max(delivered),
        "latencyMs": {"p50": round(percentile(latencies, 0.5), 2), "p99": round(percentile(latencies, 0.99), 2),
                      "max": round(max(latencies), 2) if latencies else None},
        "daemonCPUPercent": round(100 * raw["daemonCPU"] / wall, 2), "guestCPUPercent": round(100 * raw["guestCPU"] / wall, 2),
        "clientCPUPercent": round(100 * raw["clientCPU"] / wall, 2),
    }


def measure(client, peer_binary, port, session_id, token, log_path, daemon_pid, guest_pid, count):
    url = f"ws://127.0.0.1:{port}/api/v1/sessions/{session_id}/console?token={token}&mode=read"
    def cpu_of(client_cpu):
        return CPUWindow(daemon_pid, guest_pid, client_cpu)
    if client == "python":
        raw = python_window(url, log_path, cpu_of(time.process_time), count)
    else:
        raw = compiled_window(peer_binary, url, log_path, cpu_of, count)
    return summarize(client, count, raw)


def ratios(one, many):
    """50 viewers against 1 in the same run: p99 latency and the daemon's CPU, and that CPU per byte the log got (the
    TCG guest prints more slowly when the host is busy, so two windows need not carry the same output)."""
    def ratio(a, b):
        return round(a / b, 2) if b else float("nan")
    def per_byte(r):
        return r["daemonCPUPercent"] * r["windowSeconds"] / max(1, r["logBytes"])
    return {"p99": ratio(many["latencyMs"]["p99"], one["latencyMs"]["p99"]),
            "daemonCPU": ratio(many["daemonCPUPercent"], one["daemonCPUPercent"]),
            "daemonCPUPerLogByte": ratio(per_byte(many), per_byte(one))}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--appliance", required=True)
    parser.add_argument("--peer", help="vmsessionbench-peer, for the compiled client (default: beside --binary)")
    parser.add_argument("--client", default="compiled",
                        help="the console clients to measure with, in this order: compiled, python or both "
                             "(compiled,python); each measures 1 and then 50 viewers")
    parser.add_argument("--out")
    args = parser.parse_args()
    clients = ["compiled", "python"] if args.client == "both" else args.client.split(",")
    if any(client not in ("compiled", "python") for client in clients):
        parser.error(f"--client: compiled, python or both; got {args.client}")
    peer = args.peer or os.path.join(os.path.dirname(os.path.abspath(args.binary)), "vmsessionbench-peer")
    if "compiled" in clients and not os.access(peer, os.X_OK):
        parser.error(f"the compiled client needs vmsessionbench-peer: {peer} (--peer)")
    load = [os.getloadavg()]
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
        results = [measure(client, peer, port, session_id, api.token, log_path, process.pid, guest_pid, count)
                   for client in clients for count in COUNTS]
        load.append(os.getloadavg())
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

    print(f"\nconsole: one chatty TCG guest, read-only clients over {WINDOW} s windows"
          f"{' (QUICK: a short run, numbers not to be judged)' if QUICK else ''}; "
          f"load average {load[0][0]:.2f} before, {load[1][0]:.2f} after")
    print(f"{'client':>8} {'clients':>7} {'log B/s':>9} {'B/client (min..max)':>22} {'lost':>5} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'daemon CPU':>10} {'guest CPU':>9} {'client CPU':>10}")
    for r in results:
        print(f"{r['client']:>8} {r['clients']:>7} {r['logBytes'] / r['windowSeconds']:>9.0f} "
              f"{str(r['bytesPerClientMin']) + '..' + str(r['bytesPerClientMax']):>22} {r['linesLost']:>5} "
              f"{r['latencyMs']['p50']:>7} {r['latencyMs']['p99']:>7} {r['latencyMs']['max']:>7} "
              f"{r['daemonCPUPercent']:>9}% {r['guestCPUPercent']:>8}% {r['clientCPUPercent']:>9}%")
    by_client = {}
    for client in clients:
        one, many = [r for r in results if r["client"] == client]
        by_client[client] = {"results": [one, many], "ratios50To1": ratios(one, many)}
        print(f"{client}: 50 clients / 1 client (same run): p99 latency {by_client[client]['ratios50To1']['p99']:.2f} "
              f"(goal <= 1.2), daemon CPU {by_client[client]['ratios50To1']['daemonCPU']:.2f} (goal <= 2; per byte of "
              f"output {by_client[client]['ratios50To1']['daemonCPUPerLogByte']:.2f}); "
              f"bytes per client / bytes the log got: {many['bytesPerClientMin'] / max(1, many['logBytes']):.3f} (min of 50)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        first = by_client[clients[0]]
        with open(args.out, "w") as f:
            json.dump({"quick": QUICK, "loadAverage": load, "client": clients[0], "results": first["results"],
                       "p99Ratio50To1": first["ratios50To1"]["p99"], "cpuRatio50To1": first["ratios50To1"]["daemonCPU"],
                       "byClient": by_client}, f, indent=2)
    missed = [f"{r['linesLost']} ({r['client']}, {r['clients']} clients)" for r in results if r["linesLost"]]
    if missed:
        sys.exit(f"console clients missed lines: {', '.join(missed)}")


if __name__ == "__main__":
    main()
