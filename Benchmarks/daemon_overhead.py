#!/usr/bin/env python3
"""What vmsessiond costs over libvirt itself, measured side by side in one run.

Every figure is a distribution or a ratio against its peer, measured in the same run on the same
machine; nothing here is asserted (these machines are shared and noisy). Prints a table and writes the
same figures as JSON (path printed at the end).

  1. cold start   request -> the guest's first console marker: daemon (HTTP create+open+start) vs the
                  same domain defined and started directly through the embedded driver (vmsessionbench-peer);
                  the two take turns run by run
  2. control      pause / resume / cap: HTTP request -> its event on the SSE stream vs the bare libvirt call, each
                  side with a guest of its own, all up at once, taking turns sample by sample
  3. read path    GET /api/v1/sessions/{id} under wrk vs virDomainGetInfo against a libvirtd (test driver)
                  over its Unix socket, at the same concurrency
  4. fan-out      100 and 1000 SSE clients on one session: emission -> receipt, events lost, beside the same client
                  against a server that only fans out (vmsessionbench-peer fanout-floor): the client's and kernel's floor,
                  and against the same fan-out on SwiftNIO alone (fanout-nio-floor): what the daemon's framework costs
  5. footprint    daemon RSS and PSS idle (anonymous and file-backed; after start-up has settled) and with N
                  sessions, start-up time to the first answer with N sessions, against libvirtd's RSS and PSS and
                  the idle goal (IDLE_RSS_GOAL_MIB); Benchmarks/footprint.py breaks the same figures down by part
"""

import argparse
import http.client
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def spread(values):
    return {"runs": len(values), "p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
            "min": min(values) if values else None, "max": max(values) if values else None}


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pss_kib(pid):
    """Proportional set size: each shared page (libc, libvirt's libraries) divided among the processes that map it."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


# The daemon's idle resident memory goal (issue #20): what it keeps with no session and no client.
IDLE_RSS_GOAL_MIB = 40
# The daemon releases its start-up memory 2 s after it listens (StartupMemoryRelease); idle is measured after.
SETTLE_SECONDS = 4


class Daemon:
    """The real vmsessiond binary on a free port, in a state directory of its own."""

    def __init__(self, binary, state, *args):
        self.binary, self.state, self.args = binary, state, list(args)
        self.process = None
        self.port = None

    def start(self, timeout=60):
        os.makedirs(self.state, exist_ok=True)
        self.log_path = os.path.join(self.state, "daemon.log")
        log = open(self.log_path, "ab")
        offset = log.tell()
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            [self.binary, "--listen", "127.0.0.1:0", "--state-dir", self.state, "--log-level", "notice"] + self.args,
            stdout=log, stderr=log)
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", f.read())
            if match:
                self.port = int(match.group(1))
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"vmsessiond exited; see {self.log_path}")
            time.sleep(0.002)
        raise RuntimeError("vmsessiond did not start")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def call(self, method, path, token=None, body=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, (json.loads(data) if data else {})

    def new_session(self, name):
        status, reply = self.call("POST", "/api/v1/sessions", body={"name": name, "secret": "bench-secret"})
        assert status == 201, reply
        return reply["session"]["id"], reply["token"]

    def act(self, session, token, action, body=None, wait=True):
        status, reply = self.call("POST", f"/api/v1/sessions/{session}/{action}", token, body if body is not None else {})
        assert status in (200, 202), reply
        if wait and status == 202:
            operation = reply["operation"]["id"]
            _, done = self.call("GET", f"/api/v1/operations/{operation}/wait?timeout=120", token)
            assert done["status"] == "succeeded", done
        return reply


class ControlClient:
    """Times an action from its request to its event, in one thread: one keep-alive connection for the
    requests and one for the session's SSE stream, read with `select` as the bytes arrive.

    Why not a thread per stream and a connection per request (as this benchmark first did): the control
    path's goal is under a millisecond over the bare libvirt call, and a Python listener thread woken through
    a condition variable, plus a TCP handshake per request, cost the client about that much again, which
    was counted as the daemon's. `floor()` measures what is left of the client: a keep-alive GET of
    `/api/v1`, request to the whole answer.
    """

    def __init__(self, port, session, token):
        self.port, self.session, self.token = port, session, token
        self.requests = socket.create_connection(("127.0.0.1", port))
        self.requests.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = socket.create_connection(("127.0.0.1", port))
        self.stream.sendall(self._head("GET", f"/api/v1/sessions/{session}/events") + b"\r\n")
        self.stream_buffer = b""
        self.response_buffer = b""
        while b"\r\n\r\n" not in self.stream_buffer:
            self.stream_buffer += self.stream.recv(65536)
        head, _, self.stream_buffer = self.stream_buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        self.chunked = b"transfer-encoding: chunked" in head.lower()
        self.frames = b""

    def _head(self, method, path, length=None):
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {self.token}\r\n"
        if length is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
        return head.encode()

    def close(self):
        self.requests.close()
        self.stream.close()

    def _send(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        self.requests.sendall(self._head(method, path, len(data) if data is not None else None) + b"\r\n" + (data or b""))

    def _response_complete(self):
        """The status of the response in the buffer once it is whole (removed from it), else None."""
        head, sep, rest = self.response_buffer.partition(b"\r\n\r\n")
        if not sep:
            return None
        match = re.search(rb"content-length:\s*(\d+)", head.lower())
        if match:
            length = int(match.group(1))
            if len(rest) < length:
                return None
            self.response_buffer = rest[length:]
        else:
            end = rest.find(b"0\r\n\r\n")
            if end < 0:
                return None
            self.response_buffer = rest[end + 5:]
        return int(head.split(b" ", 2)[1])

    def _events(self):
        """The whole SSE frames received so far, as (kind, data), removed from the buffer."""
        data = self.stream_buffer
        if self.chunked:
            # Unwrap whole chunks only; a partial one waits for its remaining bytes.
            out = b""
            while True:
                size_end = data.find(b"\r\n")
                if size_end < 0:
                    break
                size = int(data[:size_end].split(b";")[0], 16)
                if len(data) < size_end + 2 + size + 2:
                    break
                out += data[size_end + 2:size_end + 2 + size]
                data = data[size_end + 2 + size + 2:]
            self.stream_buffer = data
            self.frames += out
        else:
            self.frames += data
            self.stream_buffer = b""
        events = []
        while b"\n\n" in self.frames:
            frame, _, self.frames = self.frames.partition(b"\n\n")
            kind, payload = None, None
            for line in frame.decode().split("\n"):
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    payload = json.loads(line[6:])
            if kind:
                events.append((kind, payload))
        return events

    def act(self, method, path, body, kind, predicate, timeout=60):
        """Milliseconds from sending the request to the arrival of the event `kind` that `predicate` accepts."""
        start = time.perf_counter()
        self._send(method, path, body)
        status, stamp = None, None
        deadline = start + timeout
        while status is None or stamp is None:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"no {kind} event (status {status})")
            readable, _, _ = select.select([self.requests, self.stream], [], [], remaining)
            now = time.perf_counter()
            if self.stream in readable:
                self.stream_buffer += self.stream.recv(65536)
                for event_kind, payload in self._events():
                    if stamp is None and event_kind == kind and predicate(payload["data"]):
                        stamp = now
            if self.requests in readable:
                self.response_buffer += self.requests.recv(65536)
                status = self._response_complete()
        assert status in (200, 202), status
        return (stamp - start) * 1000

    def floor(self):
        """Milliseconds for a keep-alive GET of `/api/v1`: what the client and loopback cost one request."""
        start = time.perf_counter()
        self._send("GET", "/api/v1")
        status = None
        while status is None:
            self.response_buffer += self.requests.recv(65536)
            status = self._response_complete()
        return (time.perf_counter() - start) * 1000


def wait_for_console(path, marker, timeout=120):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            with open(path, "rb") as f:
                if marker.encode() in f.read():
                    return time.perf_counter()
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"console never showed {marker}")


def run_peer(peer, *args):
    output = subprocess.run([peer] + list(args), check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


# 1 + 2: cold start and control latency, on the appliance under TCG.

def cold_start_and_control(opts, work):
    runs, control_runs = (1, 3) if opts.quick else (opts.runs, 20)
    cold, from_open, peer_cold = [], [], []
    if "cold" in opts.only:
        # The daemon's cold starts and the peer's take turns (the first alternating), as the control samples do.
        daemon = Daemon(opts.daemon, os.path.join(work, "vm-daemon"), "--accelerator", "tcg", "--appliance-dir", opts.appliance).start()
        peer = None
        try:
            peer = PeerServer(opts.peer, "cold-start", os.path.join(work, "peer-cold"), opts.appliance)
            for index in range(runs):
                for side in (("daemon", "peer") if index % 2 == 0 else ("peer", "daemon")):
                    if side == "peer":
                        peer_cold.append(peer.call("start"))
                        continue
                    start = time.perf_counter()
                    session, token = daemon.new_session(f"cold-{index}")
                    opened = time.perf_counter()
                    daemon.act(session, token, "open", {"cpus": 1, "memory": 256, "disk": 64})
                    daemon.act(session, token, "start", wait=False)
                    stamp = wait_for_console(os.path.join(daemon.state, "machines", session, "console.log"), "VMSESSION-APPLIANCE: booted")
                    cold.append((stamp - start) * 1000)
                    from_open.append((stamp - opened) * 1000)
                    daemon.act(session, token, "close")
        finally:
            if peer:
                peer.close()
            daemon.stop()
    measured = {}
    if "control" in opts.only:
        measured = control_latency(opts, work, control_runs)
    results = {}
    if cold:
        results["coldStart"] = {
            "compared": "request to the guest's first console marker: vmsessiond (HTTP create+open+start) vs direct libvirt define+start, runs alternating",
            "daemonMs": spread(cold), "peerMs": spread(peer_cold),
            "ratioOfMedians": statistics.median(cold) / statistics.median(peer_cold),
            # The same runs from the open request: without creating the session, whose secret's hash (scrypt,
            # tens of ms by design) has no counterpart in the peer.
            "fromOpenMs": spread(from_open), "fromOpenRatioOfMedians": statistics.median(from_open) / statistics.median(peer_cold),
            # Every sample in the order taken (the two sides alternate), to tell a drift of the machine from the
            # boots' own spread.
            "daemonSamplesMs": cold, "peerSamplesMs": peer_cold,
        }
    if measured:
        results["control"] = {"compared": "HTTP request to its event on the SSE stream vs the bare libvirt call, samples interleaved"}
        for name in ("pause", "resume", "cap"):
            peer = measured["peer"][name]
            mine = measured["daemon"][name]
            entry = {"daemonMs": spread(mine), "peerMs": spread(peer), "p50DifferenceMs": percentile(mine, 0.5) - percentile(peer, 0.5)}
            if "baseline" in measured:
                old = measured["baseline"][name]
                entry.update(baselineMs=spread(old), baselineP50DifferenceMs=percentile(old, 0.5) - percentile(peer, 0.5))
            results["control"][name] = entry
        results["control"]["clientFloorMs"] = spread(measured["daemon"]["floor"])
    return results


class PeerServer:
    """`vmsessionbench-peer SUBCOMMAND --serve`: the peer kept running, doing (and timing, inside the peer,
    libvirt alone) one call for each line sent, so that its samples can take turns with the daemon's."""

    def __init__(self, peer, subcommand, state, appliance):
        self.process = subprocess.Popen(
            [peer, subcommand, "--serve", "--state", state, "--appliance", appliance],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self.process.stdout.readline().strip()
        if line != "ready":
            self.process.kill()
            raise RuntimeError(f"vmsessionbench-peer {subcommand} did not get ready: {line!r}")

    def call(self, line):
        self.process.stdin.write(line + "\n")
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"vmsessionbench-peer ended at {line!r}")
        return float(answer)

    def close(self):
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(60)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def control_latency(opts, work, control_runs):
    """pause / resume / cap of running appliance guests: the daemon's (and the baseline's) HTTP request -> its
    event on the SSE stream, and the peer's bare libvirt call.

    The three run side by side, each with a guest of its own, and take turns sample by sample (the order
    rotating each round): drift on the machine between a daemon's run and the peer's, minutes apart, was as
    large as the difference measured (a run's bare calls 0.7 ms faster than the previous run's).
    """
    daemons, clients, opened, peer = {}, {}, {}, None
    try:
        for name, binary in [("daemon", opts.daemon)] + ([("baseline", opts.baseline)] if opts.baseline else []):
            daemon = daemons[name] = Daemon(binary, os.path.join(work, f"vm-{name}"), "--accelerator", "tcg", "--appliance-dir", opts.appliance).start()
            session, token = daemon.new_session("control")
            daemon.act(session, token, "open", {"cpus": 1, "memory": 256, "disk": 64})
            daemon.act(session, token, "start")
            wait_for_console(os.path.join(daemon.state, "machines", session, "console.log"), "VMSESSION-APPLIANCE: ready")
            clients[name] = (ControlClient(daemon.port, session, token), f"/api/v1/sessions/{session}")
            opened[name] = (session, token)
        peer = PeerServer(opts.peer, "control", os.path.join(work, "peer-control"), opts.appliance)
        names = list(clients) + ["peer"]
        samples = {name: {"pause": [], "resume": [], "cap": [], "floor": []} for name in names}
        for index in range(control_runs):
            value = 50 if index % 2 == 0 else 100
            for name in names[index % len(names):] + names[:index % len(names)]:
                taken = samples[name]
                if name == "peer":
                    taken["pause"].append(peer.call("pause"))
                    taken["resume"].append(peer.call("resume"))
                    taken["cap"].append(peer.call(f"cap {value}"))
                    continue
                client, base = clients[name]
                taken["floor"].append(client.floor())
                taken["pause"].append(client.act("POST", base + "/pause", {}, "stateChanged", lambda d: d["state"] == "paused"))
                taken["resume"].append(client.act("POST", base + "/resume", {}, "stateChanged", lambda d: d["state"] == "running"))
                taken["cap"].append(client.act("PUT", base + "/execution-cap", {"cap": value}, "executionCapChanged", lambda d: d["cap"] == value))
        return samples
    finally:
        if peer:
            peer.close()
        for client, _ in clients.values():
            client.close()
        for name, daemon in daemons.items():
            try:
                if name in opened:
                    daemon.act(*opened[name], "close")
            finally:
                daemon.stop()


# 3: the read path.

def start_libvirtd(work):
    directory = os.path.join(work, "libvirtd")
    os.makedirs(directory, exist_ok=True)
    config = os.path.join(directory, "libvirtd.conf")
    with open(config, "w") as f:
        f.write(f'unix_sock_dir = "{directory}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
                'listen_tls = 0\nlisten_tcp = 0\nmax_clients = 5000\nmax_workers = 20\nmax_client_requests = 64\n')
    log = open(os.path.join(directory, "libvirtd.log"), "wb")
    process = subprocess.Popen(["libvirtd", "-f", config, "-p", os.path.join(directory, "libvirtd.pid")], stdout=log, stderr=log)
    socket_path = os.path.join(directory, "libvirt-sock")
    deadline = time.time() + 30
    while not os.path.exists(socket_path):
        if time.time() > deadline or process.poll() is not None:
            raise RuntimeError("libvirtd did not start")
        time.sleep(0.05)
    time.sleep(0.5)
    return process, f"test+unix:///default?socket={socket_path}"


def wrk(url, token, connections, seconds):
    output = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Authorization: Bearer {token}", url],
        check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"requestsPerSecond": rps, "p99Ms": float(p99.group(1)) * scale, "non2xx": int(errors.group(1)) if errors else 0}


def read_path(opts, work):
    levels, seconds = ([8], 2) if opts.quick else ([1, 8, 64], 5)
    daemon = Daemon(opts.daemon, os.path.join(work, "read-daemon"), "--libvirt-uri", "test:///default").start()
    # The binary to compare with (--baseline), measured in turn with the same wrk at each level.
    baseline = Daemon(opts.baseline, os.path.join(work, "read-baseline"), "--libvirt-uri", "test:///default").start() if opts.baseline else None
    libvirtd, uri = start_libvirtd(work)
    results = {"compared": "GET /api/v1/sessions/{id} under wrk (keep-alive) vs virDomainGetInfo over libvirtd's Unix socket (test driver)",
               "levels": []}
    try:
        session, token = daemon.new_session("reader")
        url = f"http://127.0.0.1:{daemon.port}/api/v1/sessions/{session}"
        if baseline:
            old_session, old_token = baseline.new_session("reader")
        for connections in levels:
            mine = wrk(url, token, connections, seconds)
            peer = run_peer(opts.peer, "get-info", "--uri", uri, "--concurrency", str(connections), "--seconds", str(seconds))
            level = {"concurrency": connections, "daemon": mine, "libvirtd": peer,
                     "throughputRatio": mine["requestsPerSecond"] / peer["requestsPerSecond"]}
            if baseline:
                old = wrk(f"http://127.0.0.1:{baseline.port}/api/v1/sessions/{old_session}", old_token, connections, seconds)
                level.update(baseline=old, baselineRatio=old["requestsPerSecond"] / peer["requestsPerSecond"])
            results["levels"].append(level)
        results["libvirtdRssKiB"] = rss_kib(libvirtd.pid)
        results["libvirtdPssKiB"] = pss_kib(libvirtd.pid)
    finally:
        daemon.stop()
        if baseline:
            baseline.stop()
        libvirtd.terminate()
        libvirtd.wait(10)
    return results


# 4: event fan-out.

def fan_out_run(peer, port, session, token, clients, events, gap_ms=20):
    """`clients` SSE streams and a PUT of a property (carrying its send time) every `gap_ms` after the previous
    answer, `events` times, by the compiled client (vmsessionbench-peer fanout-client: one poll loop, each frame
    stamped when poll said its socket was readable): the latency of each event in each stream, how many never
    came, and per event when its first stream got it (the server's work before the fan-out: the request, the store,
    the event) and how long until its last one did (the fan-out itself, and the client reading every stream). A
    Python client measured its own reading as much as the server at 1000 streams."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    answer = subprocess.run(
        [peer, "fanout-client", f"--port={port}", f"--stream-path=/api/v1/sessions/{session}/events?token={token}",
         f"--put-path=/api/v1/sessions/{session}/properties/bench", f"--token={token}",  # '=': a token may start with '-'
         f"--clients={clients}", f"--events={events}", f"--gap={gap_ms}"],
        capture_output=True, timeout=600)
    if answer.returncode != 0:
        raise RuntimeError(f"fanout-client failed: {answer.stderr.decode(errors='replace')[-400:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(answer.stdout)
    per_event = result["perEventMs"]
    # The client's own CPU: one thread reads every stream, so what it spends per frame is on every event's path.
    client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result["latenciesMs"], result["lost"], {"firstMs": spread([e[0] for e in per_event]),
                                                   "firstToLastMs": spread([e[2] - e[0] for e in per_event]),
                                                   "clientCpuSeconds": client_cpu}


def cpu_seconds(pid):
    """User plus system CPU time of a process so far, from /proc (what it cost, whoever waited)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fan_out(opts, work):
    """Each size measured on the daemon as it ships (event streams on the event loops), on the same binary with
    `--events-fast-path off` (the router's streams: main's behaviour before the fast path), and on --baseline if
    given, `--fanout-runs` rounds, the variants taking turns in each round so that the machine's noise falls on all."""
    sizes, events = ([20], 5) if opts.quick else ([100, 1000], 50)
    variants = [("daemon", opts.daemon, []), ("router", opts.daemon, ["--events-fast-path", "off"])]
    if opts.baseline:
        variants.append(("baseline", opts.baseline, []))
    results = {"compared": "PUT of a property (carrying its send time) to receipt of its propertyChanged event in every SSE client; "
                           "daemon: event streams on the event loops; router: the same binary with --events-fast-path off; "
                           "floor: vmsessionbench-peer fanout-floor, one poll(2) thread that only writes each PUT's body to every "
                           "stream (what this client and the kernel cost, with no daemon work); nio-floor: fanout-nio-floor, the "
                           "same fan-out on SwiftNIO as the daemon serves it (a loop per core, NIO's HTTP/1.1 codec, one execute "
                           "per loop per event, a write and a flush per stream) and nothing else",
               "runs": []}
    for round_ in range(1 if opts.quick else opts.fanout_runs):
        # The floors first: the same client against servers that do nothing but the fan-out (see FanOutFloor and
        # FanOutNIOFloor).
        for variant, command in (("floor", "fanout-floor"), ("nio-floor", "fanout-nio-floor")):
            floor = subprocess.Popen([opts.peer, command], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            try:
                port = int(re.search(rb"127\.0\.0\.1:(\d+)", floor.stdout.readline()).group(1))
                for clients in sizes:
                    cpu = cpu_seconds(floor.pid)
                    latencies, lost, per_event = fan_out_run(opts.peer, port, "floor", "floor", clients, events)
                    results["runs"].append({"variant": variant, "round": round_, "clients": clients, "events": events,
                                            "latencyMs": spread(latencies), "lost": lost, **per_event,
                                            "daemonCpuSeconds": cpu_seconds(floor.pid) - cpu})
            finally:
                floor.kill()
                floor.wait()
        for name, binary, args in variants:
            daemon = Daemon(binary, os.path.join(work, f"fanout-{name}"), "--libvirt-uri", "test:///default", *args).start()
            try:
                session, token = daemon.new_session(f"fanout{round_}")
                for clients in sizes:
                    cpu = cpu_seconds(daemon.process.pid)
                    latencies, lost, per_event = fan_out_run(opts.peer, daemon.port, session, token, clients, events)
                    results["runs"].append({"variant": name, "round": round_, "clients": clients, "events": events,
                                            "latencyMs": spread(latencies), "lost": lost, **per_event,
                                            "daemonCpuSeconds": cpu_seconds(daemon.process.pid) - cpu})
            finally:
                daemon.stop()
    return results


# 5: footprint.

def footprint(opts, work, libvirtd_rss, libvirtd_pss):
    count = 50 if opts.quick else 1000
    state = os.path.join(work, "footprint-daemon")
    # The session quota (64 in all, 16 per client by default) is lifted for this measure of many sessions.
    # Sessions are created one after the other: the daemon hashes one secret per client at a time and
    # answers a second one at once with 429 (its guard against parallel guessing).
    limits = ["--limit", "sessions=100000", "--limit", "sessionsPerOrigin=100000"]
    daemon = Daemon(opts.daemon, state, "--libvirt-uri", "test:///default", *limits).start()
    try:
        time.sleep(SETTLE_SECONDS)
        idle = rss_kib(daemon.process.pid)
        # Anonymous (heap, stacks: the daemon's own) and file-backed (code and libraries mapped from disk).
        idle_parts = {"anonKiB": rss_kib(daemon.process.pid, "RssAnon"), "fileKiB": rss_kib(daemon.process.pid, "RssFile"),
                      "pssKiB": pss_kib(daemon.process.pid)}
        for i in range(count):
            daemon.new_session(f"s{i}")
        time.sleep(1)
        loaded = rss_kib(daemon.process.pid)
        loaded_pss = pss_kib(daemon.process.pid)
    finally:
        daemon.stop()
    starts = []
    for _ in range(1 if opts.quick else 5):
        daemon = Daemon(opts.daemon, state, "--libvirt-uri", "test:///default", *limits)
        start = time.perf_counter()
        daemon.start()
        while True:
            try:
                status, _ = daemon.call("GET", "/api/v1")
                if status == 200:
                    break
            except OSError:
                time.sleep(0.002)
        starts.append((time.perf_counter() - start) * 1000)
        after_restart = rss_kib(daemon.process.pid)
        daemon.stop()
    return {"compared": "vmsessiond's RSS and start-up (test driver) vs libvirtd's RSS (test driver, idle)",
            "sessions": count, "daemonRssIdleKiB": idle, "daemonRssIdleParts": idle_parts, "daemonRssWithSessionsKiB": loaded,
            "daemonPssWithSessionsKiB": loaded_pss, "libvirtdPssKiB": libvirtd_pss,
            "goalIdleMiB": IDLE_RSS_GOAL_MIB,
            "daemonRssAfterRestartKiB": after_restart, "startupToFirstAnswerMs": spread(starts),
            "libvirtdRssKiB": libvirtd_rss}


def table(results):
    lines = ["", "vmsessiond vs libvirt (same run, same machine)", "=" * 78]
    if "coldStart" in results:
        c = results["coldStart"]
        lines.append(f"cold start to first console marker   daemon p50 {c['daemonMs']['p50']:8.0f} ms   libvirt p50 {c['peerMs']['p50']:8.0f} ms"
                     f"   ratio {c['ratioOfMedians']:.2f}  (n={c['daemonMs']['runs']}, goal <= 1.02)")
        lines.append(f"{'':7s}   from the open request (no scrypt) daemon p50 {c['fromOpenMs']['p50']:8.0f} ms"
                     f"   ratio {c['fromOpenRatioOfMedians']:.2f}")
    if "control" in results:
        for name in ("pause", "resume", "cap"):
            x = results["control"][name]
            lines.append(f"{name:7s} request -> SSE event          daemon p50 {x['daemonMs']['p50']:7.2f} p99 {x['daemonMs']['p99']:7.2f} ms"
                         f"   libvirt p50 {x['peerMs']['p50']:7.2f} p99 {x['peerMs']['p99']:7.2f} ms   +{x['p50DifferenceMs']:.2f} ms (goal < 1)")
            if "baselineMs" in x:
                lines.append(f"{'':7s}   baseline                    p50 {x['baselineMs']['p50']:7.2f} p99 {x['baselineMs']['p99']:7.2f} ms"
                             f"   +{x['baselineP50DifferenceMs']:.2f} ms")
        floor = results["control"]["clientFloorMs"]
        lines.append(f"{'':7s}   client floor (keep-alive GET /api/v1)  p50 {floor['p50']:7.2f} p99 {floor['p99']:7.2f} ms, inside each difference")
    for level in results.get("readPath", {}).get("levels", []):
        d, p = level["daemon"], level["libvirtd"]
        lines.append(f"read path c={level['concurrency']:<4d}                  daemon {d['requestsPerSecond']:9.0f} req/s p99 {d['p99Ms']:6.2f} ms"
                     f"   libvirtd {p['requestsPerSecond']:9.0f} req/s p99 {p['p99Ms']:6.2f} ms   ratio {level['throughputRatio']:.2f} (goal >= 1.5)")
        if "baseline" in level:
            b = level["baseline"]
            lines.append(f"{'':7s}   baseline                    {b['requestsPerSecond']:9.0f} req/s p99 {b['p99Ms']:6.2f} ms"
                         f"   ratio {level['baselineRatio']:.2f}")
    for run in results.get("fanOut", {}).get("runs", []):
        lines.append(f"fan-out {run['clients']:5d} clients x {run['events']:3d} events {run.get('variant', 'daemon'):9s}"
                     f"   p50 {run['latencyMs']['p50']:7.2f} ms  p99 {run['latencyMs']['p99']:7.2f} ms   lost {run['lost']}"
                     f"   daemon CPU {run.get('daemonCpuSeconds', 0):5.2f} s, client {run.get('clientCpuSeconds', 0):5.2f} s"
                     + f"   first stream p50 {run['firstMs']['p50']:6.2f} max {run['firstMs']['max']:6.2f} ms,"
                     + f" first to last p50 {run['firstToLastMs']['p50']:6.2f} max {run['firstToLastMs']['max']:6.2f} ms"
                     + {"floor": " (the client's and the kernel's floor)", "nio-floor": " (the same on SwiftNIO alone)"}.get(
                         run.get("variant"), " (goal p99 < 20 ms, 0 lost)"))
    if "footprint" not in results:
        return "\n".join(lines)
    f = results["footprint"]
    parts = f["daemonRssIdleParts"]
    lines.append("RSS idle".ljust(37) + f"daemon {f['daemonRssIdleKiB'] / 1024:5.1f} MiB (anon {parts['anonKiB'] / 1024:.1f}, file {parts['fileKiB'] / 1024:.1f})"
                 f"   libvirtd {f['libvirtdRssKiB'] / 1024:5.1f} MiB   (goal <= {f['goalIdleMiB']} MiB)")
    lines.append("PSS idle".ljust(37) + f"daemon {parts['pssKiB'] / 1024:5.1f} MiB   libvirtd {f['libvirtdPssKiB'] / 1024:5.1f} MiB"
                 f"   (shared library pages divided among their processes)")
    lines.append(f"RSS with {f['sessions']} sessions".ljust(37) + f"daemon {f['daemonRssWithSessionsKiB'] / 1024:5.1f} MiB (PSS {f['daemonPssWithSessionsKiB'] / 1024:.1f}),"
                 f" after a restart {f['daemonRssAfterRestartKiB'] / 1024:.1f} MiB;"
                 f" start-up to first answer p50 {f['startupToFirstAnswerMs']['p50']:.0f} ms")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--appliance", required=True)
    parser.add_argument("--out", default="artifacts/bench.json")
    # A TCG boot of the appliance varies by 180 to 240 ms (sd) from one to the next, four times the daemon's own
    # share of a cold start (creating the session hashes its secret with scrypt, about 45 ms): five samples a
    # side put the ratio of medians anywhere from 1.00 to 1.04 in four runs of the same binaries.
    parser.add_argument("--runs", type=int, default=11, help="cold starts of each side (default 11)")
    parser.add_argument("--quick", action="store_true", help="a few runs of each, to keep the code from rotting")
    parser.add_argument("--skip-vm", action="store_true", help="skip the sections that boot real guests")
    parser.add_argument("--baseline", help="another vmsessiond binary (say main's release build), measured beside --daemon "
                                          "in the read path, control and fan-out sections of the same run")
    parser.add_argument("--fanout-runs", type=int, default=1,
                        help="rounds of the fan-out section (each measures the daemon, the router's path, and the baseline)")
    parser.add_argument("--only", default="cold,control,read,fanout,footprint",
                        help="the sections to run, comma-separated (default: all of cold,control,read,fanout,footprint)")
    opts = parser.parse_args()
    opts.only = set(opts.only.split(","))
    if opts.skip_vm:
        opts.only -= {"cold", "control"}
    opts.appliance = os.path.abspath(opts.appliance)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = tempfile.mkdtemp(prefix="vms-bench-")
    results = {"quick": opts.quick, "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}}
    began = time.time()
    try:
        if opts.only & {"cold", "control"}:
            results.update(cold_start_and_control(opts, work))
        if "read" in opts.only:
            results["readPath"] = read_path(opts, work)
        if "fanout" in opts.only:
            results["fanOut"] = fan_out(opts, work)
        if "footprint" in opts.only:
            read = results.get("readPath", {})
            results["footprint"] = footprint(opts, work, read.get("libvirtdRssKiB", 0), read.get("libvirtdPssKiB", 0))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.time() - began
    os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
    with open(opts.out, "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))
    print(f"\nfigures as JSON: {os.path.abspath(opts.out)}  ({results['seconds']:.0f} s)")
    # A lost event is a fault, not a slow figure: every stream reads everything, so none may be missing.
    lossy = [run for run in results.get("fanOut", {}).get("runs", []) if run["lost"]]
    if lossy:
        sys.exit("fan-out lost events: " + ", ".join(f"{run['variant']} {run['clients']} clients lost {run['lost']}" for run in lossy))


if __name__ == "__main__":
    main()
