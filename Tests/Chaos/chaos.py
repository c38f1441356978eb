#!/usr/bin/env python3
"""make chaos: the real vmsessiond on libvirt's embedded QEMU driver with real appliance guests, killed
with SIGKILL at random points of open, start, pause, hibernate, restore, stop, close, snapshot, revert,
making a template and a warm start from one, and with its qemu killed. After each restart it checks that:

- every event a client had received is still there, in order, with the same type and time (?since=0);
- every session's state matches the VM: one qemu for running/paused, a managed-save file and no qemu for
  saved, no qemu for open/error, nothing at all (qemu, domain, files) for closed;
- there is no orphan qemu, domain, machine directory or guest network helper (passt, pasta, socat);
- every session lists exactly the snapshots libvirt keeps metadata of (none once closed);
- every template listed has its files (memory image, header, disk), and no template directory is left of
  one that is not listed;
- `PRAGMA integrity_check` says ok;
- the next action works.

It prints the counts (rounds, mismatches, failed next actions, 5xx) and exits non-zero if any is not 0.
Every qemu it started is killed at the end. CHAOS_ROUNDS (or --rounds) sets the number of rounds.

CHAOS_HOSTS=1 (or --hosts) adds a libvirt host reached over real SSH (Benchmarks/sshhost.py: a user's session
libvirtd behind a loopback sshd; root only) and as many sessions again that are placed there (the other host is
drained for each of their opens). In half the rounds, right after the round's action, that host is lost: its
libvirtd is SIGKILLed with its socket directory closed (so it cannot be autostarted again), or its sshd is
SIGSTOPped. While it is down it checks that every session on it says `host.state` unreachable and that every
local session keeps working (its state matches its VM; a running one pauses and resumes); then the host comes
back and must be `connected` again. Every round's checks above also hold for the host's sessions (the VM and
its managed save and its snapshots' metadata are looked for in the host user's libvirt), and a closed session's VM
and volumes are gone from the host. Templates are made there too (from the host's sessions; its sessions open from
them): a listed template on the host has its three volumes in the host's pool and its header in the daemon's
`hosts/lab/templates`, and no template volume or header directory is left there of one that is not listed.
"""
import argparse
import glob
import http.client
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ACTIONS_BY_STATE = {
    "closed": ["open"],
    "open": ["start", "close"],
    "running": ["pause", "hibernate", "stop", "close", "qemu-kill", "snapshot", "revert", "template"],
    "paused": ["resume", "hibernate", "stop", "close", "snapshot", "revert"],
    "saved": ["start", "close"],
    "error": ["close", "open", "start"],
}
# After each restart one of these runs to its end (it must work); the choice spreads the sessions over
# every state, so that the next round's kill can land in any action (restore from saved included).
NEXT_ACTIONS = {
    "closed": ["open"], "open": ["start", "start", "close"], "running": ["pause", "hibernate", "stop", "snapshot", "template"],
    "paused": ["resume", "hibernate", "revert"], "saved": ["start"], "error": ["open"],
}
REQUIREMENTS = {"cpus": 1, "memory": 192, "disk": 64, "version": "appliance"}
# CHAOS_FOCUS=templates: half the running sessions' rounds make a template, and every open is from one.
FOCUS = os.environ.get("CHAOS_FOCUS", "")
# Actions a session on the SSH host does not take: none now (templates are made there and checked against the
# host's pool and the daemon's headers for it). Snapshots and reverts are taken there as here.
LOCAL_ONLY = set()
# How long a lost or returning host may take to be seen as such (libvirt keepalive: seconds).
HOST_TIMEOUT = 60


class Counts:
    def __init__(self):
        self.rounds = 0
        self.mismatches = 0
        self.failed_next = 0
        self.server_errors = 0
        self.lost_events = 0
        self.orphans = 0
        self.integrity = 0
        self.notes = []

    def note(self, kind, text):
        setattr(self, kind, getattr(self, kind) + 1)
        self.notes.append(f"round {self.rounds}: {kind}: {text}")
        print(f"  !! {kind}: {text}", flush=True)


class Daemon:
    def __init__(self, binary, state, appliance):
        self.binary, self.state, self.appliance = binary, state, appliance
        self.process = None
        self.port = None
        self.log = os.path.join(state, "daemon.log")

    def start(self):
        os.makedirs(self.state, exist_ok=True)
        offset = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            [self.binary, "--listen", "127.0.0.1:0", "--state-dir", self.state, "--appliance-dir", self.appliance,
             "--accelerator", "tcg", "--stop-grace", "5"],
            stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            with open(self.log, "rb") as f:
                f.seek(offset)
                m = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"vmsessiond exited with {self.process.returncode}; see {self.log}")
            time.sleep(0.05)
        raise RuntimeError("vmsessiond did not listen within 60 s")

    def kill9(self):
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill9()


class API:
    def __init__(self, daemon, counts):
        self.daemon, self.counts = daemon, counts

    def call(self, method, path, token=None, body=None, timeout=60):
        url = f"http://127.0.0.1:{self.daemon.port}{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            payload = error.read()
            if error.code >= 500:
                self.counts.note("server_errors", f"{method} {path} -> {error.code} {payload[:300]!r}")
            try:
                return error.code, json.loads(payload or b"{}")
            except ValueError:
                return error.code, {}
        except (OSError, http.client.HTTPException) as error:
            # No answer at all (the daemon died under the request, or hangs): counted, not a crash of the run.
            self.counts.note("server_errors", f"{method} {path} -> no answer: {error!r}")
            return 0, {}


class Follower(threading.Thread):
    """A client following a session's events live, as a page would, until the daemon dies."""

    def __init__(self, api, sid, token, since):
        super().__init__(daemon=True)
        self.api, self.sid, self.token, self.since = api, sid, token, since
        self.received = []

    def run(self):
        url = f"http://127.0.0.1:{self.api.daemon.port}/api/v1/sessions/{self.sid}/events?token={self.token}&since={self.since}"
        block = {}
        try:
            with urllib.request.urlopen(url, timeout=600) as response:
                for raw in response:
                    line = raw.decode().rstrip("\n")
                    if not line:
                        if "id" in block:
                            self.received.append(block)
                        block = {}
                    elif line.startswith("id: "):
                        block["id"] = int(line[4:])
                    elif line.startswith("event: "):
                        block["type"] = line[7:]
                    elif line.startswith("data: "):
                        block["time"] = json.loads(line[6:]).get("time")
        except Exception:
            pass


def live_processes():
    """(pid, argument vector) of every process that runs (zombies left out)."""
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            with open(proc + "/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(proc + "/stat") as f:
                if ") Z " in f.read():
                    continue
        except OSError:
            continue
        if args and args[0]:
            yield int(proc[6:]), args


def qemu_pids(name=None):
    """Live qemu processes of our guests (by the guest name on their command line)."""
    found = {}
    for pid, args in live_processes():
        if b"qemu-system" not in args[0]:
            continue
        for arg in args:
            m = re.match(rb"guest=(vms-[0-9a-f-]+)", arg)
            if m:
                found.setdefault(m.group(1).decode(), []).append(pid)
    return found if name is None else found.get(name, [])


def probe_pids(state_dir):
    """qemu processes libvirt runs to probe capabilities for this state directory (not guests)."""
    pids = []
    marker = f"unix:{state_dir}/libvirt/lib/qemu/qmp-".encode()
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            with open(proc + "/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and b"qemu-system" in args[0] and any(arg.startswith(marker) for arg in args):
            pids.append(int(proc[6:]))
    return pids


def network_helpers():
    """Live passt, pasta and socat processes of our guests' networks, by session id: their command lines name
    the session's network directory (<state>/machines/<id>/network, or /tmp/vmsessiond-<uid>/<id>.net)."""
    found = {}
    for pid, args in live_processes():
        if os.path.basename(args[0]) not in (b"passt", b"pasta", b"socat", b"passt.avx2"):
            continue
        for arg in args:
            m = re.search(rb"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:/network/|\.net/)", arg)
            if m:
                found.setdefault(m.group(1).decode(), []).append(pid)
                break
    return found


def remote_reality(host, sid):
    """The same as reality(), on the SSH host: the host user's libvirt keeps the definition and the managed save
    under its home, and the session's volumes are in its `vmsessiond` pool (`dir`: a volume is left)."""
    name = f"vms-{sid}"
    saves, defined = False, False
    for root, _, files in os.walk(host.home):
        saves = saves or f"{name}.save" in files
        defined = defined or (f"{name}.xml" in files and root.endswith("/qemu"))
    volumes = [f for f in os.listdir(host.home + "/pool") if name in f] if os.path.isdir(host.home + "/pool") else []
    return {"qemu": len(qemu_pids(name)), "save": saves, "defined": defined, "dir": bool(volumes)}


def reality(state_dir, sid):
    name = f"vms-{sid}"
    root = os.path.join(state_dir, "libvirt")
    saves = glob.glob(f"{root}/**/{name}.save", recursive=True)
    configs = [p for p in glob.glob(f"{root}/etc/**/{name}.xml", recursive=True)]
    machine_dir = os.path.isdir(os.path.join(state_dir, "machines", sid))
    return {"qemu": len(qemu_pids(name)), "save": bool(saves), "defined": bool(configs), "dir": machine_dir}


def remote_snapshots(host, sid):
    """The snapshots the host user's libvirt keeps metadata of for the session's VM."""
    names = []
    for root, _, files in os.walk(host.home):
        if root.endswith(f"/snapshot/vms-{sid}"):
            names += [f[:-4] for f in files if f.endswith(".xml")]
    return sorted(names)


def libvirt_snapshots(state_dir, sid):
    """The snapshots libvirt keeps metadata of for the session's VM."""
    files = glob.glob(os.path.join(state_dir, "libvirt", "**", "snapshot", f"vms-{sid}", "*.xml"), recursive=True)
    return sorted(os.path.basename(f)[:-4] for f in files)


STABLE_STATES = ("running", "paused", "saved", "open", "error", "closed")
# How long a local session's action in flight gets to end while the SSH host is down (a hibernate under TCG on a
# loaded machine takes seconds; one blocked by the lost host would never end).
LOCAL_SETTLE = 60


def matches(state, real):
    if state in ("running", "paused"):
        return real["qemu"] == 1 and not real["save"]
    if state == "saved":
        return real["qemu"] == 0 and real["save"]
    if state in ("open", "error"):
        return real["qemu"] == 0 and not real["save"]
    if state == "closed":
        return real["qemu"] == 0 and not real["save"] and not real["defined"] and not real["dir"]
    return False  # a transient state after reconcile is itself wrong


def follow(api, sessions):
    followers = {s: Follower(api, s, e["token"], 0) for s, e in sessions.items()}
    for follower in followers.values():
        follower.start()
    return followers


def caught_up(follower, count, timeout=10):
    """The follower's events once it has at least `count` (the replay) or `timeout` passed."""
    deadline = time.time() + timeout
    while len(follower.received) < count and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    return list(follower.received)


def wait_operation(api, token, operation, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, body = api.call("GET", f"/api/v1/operations/{operation}/wait?timeout=30", token=token, timeout=40)
        if status != 200:
            return status, body
        if body.get("status") != "running":
            return status, body
    return 0, {"status": "timeout"}


def templates(api, state_dir, host=None):
    """The templates the daemon lists (on `host` only, if given): name -> the sessions using it."""
    status, listed = api.call("GET", "/api/v1/templates", token=admin_token(state_dir))
    if status != 200:
        return {}
    return {t["name"]: t["sessions"] for t in listed.get("templates", []) if host is None or t.get("host", "local") == host}


def remote_template_volumes(host):
    """The template volumes in the SSH host's pool: template name -> its volumes' suffixes."""
    found = {}
    pool = host.home + "/pool"
    for name in (os.listdir(pool) if os.path.isdir(pool) else []):
        match = re.match(r"tmpl-(.+)\.(memory\.save|disk\.qcow2|complete)$", name)
        if match:
            found.setdefault(match.group(1), set()).add(match.group(2))
    return found


def template_leftovers(api, state_dir, host):
    """What is wrong with the templates: a listed one missing a file, a file or volume of one not listed."""
    wrong = []
    listed = templates(api, state_dir)
    local = templates(api, state_dir, "local")
    for name in local:
        for part in ("memory.save", "header", "disk.qcow2"):
            if not os.path.exists(os.path.join(state_dir, "templates", name, part)):
                wrong.append(("mismatches", f"template {name} is listed but has no {part}"))
    for directory in glob.glob(os.path.join(state_dir, "templates", "*")):
        if os.path.basename(directory) not in local:
            wrong.append(("orphans", f"template directory {directory} of no listed template"))
    if host is None:
        return wrong
    remote = templates(api, state_dir, "lab")
    volumes = remote_template_volumes(host)
    for name in remote:
        if volumes.get(name) != {"memory.save", "disk.qcow2", "complete"}:
            wrong.append(("mismatches", f"template {name} on lab is listed but the host has {sorted(volumes.get(name, []))}"))
        if not os.path.exists(os.path.join(state_dir, "hosts", "lab", "templates", name, "header")):
            wrong.append(("mismatches", f"template {name} on lab is listed but the daemon keeps no header"))
    for name, parts in volumes.items():
        if name not in listed:
            wrong.append(("orphans", f"template volumes {sorted(parts)} of {name}, not listed, on lab"))
    for directory in glob.glob(os.path.join(state_dir, "hosts", "lab", "templates", "*")):
        if os.path.basename(directory) not in remote:
            wrong.append(("orphans", f"template directory {directory} of no listed template on lab"))
    return wrong


def runs_from_template(view, api, state_dir):
    """A session opened from a template: the daemon refuses (409) to make a template of it, by design (its disk
    is an overlay on the first template's), so it is never asked to."""
    version = view.get("version")
    return bool(version) and version in templates(api, state_dir)


def admin_token(state_dir):
    with open(os.path.join(state_dir, "admin-token")) as f:
        return f.read().strip()


def local_open(api, state_dir, host="local"):
    """Half of the opens are from a template of the session's host, if there is one: their start is a warm start."""
    names = sorted(templates(api, state_dir, host)) if state_dir else []
    if names and (FOCUS == "templates" or random.random() < 0.5):
        return dict(REQUIREMENTS, version=random.choice(names))
    return REQUIREMENTS


def act(api, sid, token, action, state_dir=None, where=None):
    if action == "template":
        # One or two templates at a time: an unused older one goes first.
        existing = templates(api, state_dir)
        for name, users in sorted(existing.items())[:-1]:
            if not users:
                api.call("DELETE", f"/api/v1/templates/{name}", token=admin_token(state_dir))
        return api.call("POST", "/api/v1/templates", token=admin_token(state_dir),
                        body={"name": f"chaos-{time.time_ns()}", "fromSession": sid})
    if action in ("snapshot", "revert"):
        status, listed = api.call("GET", f"/api/v1/sessions/{sid}/snapshots", token=token)
        names = [snapshot["name"] for snapshot in listed.get("snapshots", [])] if status == 200 else []
        if action == "revert" and names:
            return api.call("POST", f"/api/v1/sessions/{sid}/snapshots/{random.choice(names)}/revert", token=token)
        # Room under the per-session quota: the oldest goes first.
        if len(names) >= 4:
            api.call("DELETE", f"/api/v1/sessions/{sid}/snapshots/{names[0]}", token=token)
        return api.call("POST", f"/api/v1/sessions/{sid}/snapshots", token=token, body={"name": f"chaos-{time.time_ns()}"})
    body = None
    if action == "open" and where is not None:
        # Placement is steered: the other host is drained while this session is opened.
        other = "local" if where != "local" else "lab"
        api.call("POST", f"/api/v1/hosts/{other}/drain", token=admin_token(state_dir), body={})
        try:
            return api.call("POST", f"/api/v1/sessions/{sid}/open", token=token,
                            body=local_open(api, state_dir, where))
        finally:
            api.call("POST", f"/api/v1/hosts/{other}/undrain", token=admin_token(state_dir), body={})
    if action == "open":
        body = local_open(api, state_dir)
    elif action == "start":
        body = {"userData": "#!/bin/sh\necho chaos\n"}
    return api.call("POST", f"/api/v1/sessions/{sid}/{action}", token=token, body=body)


def wait_host(api, admin, name, state, timeout=HOST_TIMEOUT):
    """Whether the host `name` reaches `state` (connected, unreachable) within `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if api.daemon.process.poll() is not None:
            return False  # the daemon died (counted once by the round)
        status, body = api.call("GET", f"/api/v1/hosts/{name}", token=admin)
        if status == 200 and body.get("state") == state:
            return True
        time.sleep(0.2)
    return False


def host_fault(api, state_dir, host, sessions, counts):
    """Loses the SSH host (its libvirtd killed and kept down, or its sshd stopped), checks its sessions are told
    and the local ones keep working, and brings it back."""
    kind = random.choice(["libvirtd", "sshd"])
    admin = admin_token(state_dir)
    sockets = host.home + "/.cache/libvirt"
    stopped = []
    print(f"  host fault: {kind}", flush=True)
    if kind == "libvirtd":
        pid = host.libvirtd_pid()
        os.chmod(sockets, 0)
        if pid:
            os.kill(pid, signal.SIGKILL)
    else:
        stopped = [host.sshd.pid] + host.session_processes()
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
    try:
        if not wait_host(api, admin, "lab", "unreachable"):
            counts.note("mismatches", f"host lab never unreachable after its {kind} was lost")
        else:
            for s, e in sessions.items():
                status, body = api.call("GET", f"/api/v1/sessions/{s}", token=admin)
                placed = (body.get("host") or {}).get("name")
                seen = (body.get("host") or {}).get("state")
                # A session meant for the lab is on it once opened there; one never opened (closed, still on
                # the host it was created on) is not.
                if e["where"] == "lab" and body.get("state") != "closed" and placed != "lab":
                    counts.note("mismatches", f"{s[:8]} ({body.get('state')}) is on host {placed}, not the lab")
                if placed == "lab" and seen != "unreachable":
                    counts.note("mismatches", f"{s[:8]} on the lost host says host.state {seen}")
                if e["where"] != "local":
                    continue
                # Every other session keeps working while the host is down: an action of this round still in flight
                # (a close, a stop, a hibernate: the host may be found lost within a second) ends on its own; only a
                # local session that stays in a transient state for LOCAL_SETTLE seconds is a mismatch.
                deadline = time.time() + LOCAL_SETTLE
                while status == 200 and body.get("state") not in STABLE_STATES and time.time() < deadline:
                    time.sleep(0.2)
                    status, body = api.call("GET", f"/api/v1/sessions/{s}", token=admin)
                real = reality(state_dir, s)
                if status != 200 or not matches(body.get("state"), real):
                    counts.note("mismatches", f"{s[:8]} (local) is {body.get('state')} while the host is down, VM {real}")
                elif body.get("state") == "running":
                    for action in ("pause", "resume"):
                        status, reply = api.call("POST", f"/api/v1/sessions/{s}/{action}", token=e["token"], body={})
                        if status != 200:
                            counts.note("failed_next", f"{s[:8]} (local) {action} while the host is down: {status} {json.dumps(reply)[:300]}")
                            break
    finally:
        if kind == "libvirtd":
            os.chmod(sockets, 0o700)
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    if not wait_host(api, admin, "lab", "connected"):
        counts.note("mismatches", f"host lab not connected again within {HOST_TIMEOUT} s of its {kind}'s return")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--appliance", required=True)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("CHAOS_ROUNDS", "50")))
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", str(int(time.time())))))
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    parser.add_argument("--hosts", action="store_true", default=os.environ.get("CHAOS_HOSTS", "") not in ("", "0"),
                        help="add an SSH host with as many sessions again, and lose it at random (CHAOS_HOSTS=1)")
    args = parser.parse_args()
    random.seed(args.seed)
    print(f"chaos: {args.rounds} rounds, {args.sessions} sessions{' + as many on an SSH host' if args.hosts else ''}, "
          f"seed {args.seed}", flush=True)
    host = None

    counts = Counts()
    workdir = tempfile.mkdtemp(prefix="vms-chaos-")
    state_dir = os.path.join(workdir, "state")
    daemon = Daemon(args.daemon, state_dir, args.appliance)
    api = API(daemon, counts)
    ours = set()
    try:
        daemon.start()
        if args.hosts:
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Benchmarks"))
            from sshhost import SSHHost
            host = SSHHost.start()
            host.define_pool()
            status, body = api.call("POST", "/api/v1/hosts", token=admin_token(state_dir), body={"name": "lab", "uri": host.uri})
            assert status == 201, body
            assert wait_host(api, admin_token(state_dir), "lab", "connected"), "the SSH host never connected"
        sessions = {}
        for i in range(args.sessions * (2 if args.hosts else 1)):
            status, body = api.call("POST", "/api/v1/sessions", body={"name": f"chaos-{i}", "secret": "chaos"})
            assert status == 201, body
            sid = body["session"]["id"]
            sessions[sid] = {"token": body["token"], "seen": [], "where": "lab" if i >= args.sessions else "local"}
            ours.add(f"vms-{sid}")
        where = (lambda s: sessions[s]["where"]) if args.hosts else (lambda s: None)

        # Clients follow every session from its first event and never hang up while the daemon lives
        # (a client that disconnects while events are sent is issue 10 item 1, tested elsewhere).
        followers = follow(api, sessions)
        for round_number in range(1, args.rounds + 1):
            counts.rounds = round_number
            sid = random.choice(list(sessions))
            entry = sessions[sid]
            token = entry["token"]
            _, current = api.call("GET", f"/api/v1/sessions/{sid}", token=token)
            state = current.get("state", "?")
            choices = ACTIONS_BY_STATE.get(state, ["close"])
            if where(sid) == "lab":
                choices = [c for c in choices if c not in LOCAL_ONLY]
            warm = runs_from_template(current, api, state_dir)
            if warm:
                choices = [c for c in choices if c != "template"]
            action = random.choice(choices)
            if FOCUS == "templates" and state == "running" and not warm and random.random() < 0.5:
                action = "template"
            delay = random.choice([0.0, 0.005, 0.01, 0.03, 0.1, 0.3, 0.6, 1.0, 2.0, 4.0])
            on = f" on {where(sid)}" if where(sid) else ""
            print(f"round {round_number}: {sid[:8]}{on} {state} -> {action}, kill after {delay:.3f} s", flush=True)
            if action == "qemu-kill":
                for pid in qemu_pids(f"vms-{sid}"):
                    os.kill(pid, signal.SIGKILL)
                time.sleep(1 + delay)
            else:
                act(api, sid, token, action, state_dir, where(sid))
                time.sleep(delay)
            if host and random.random() < 0.5:
                host_fault(api, state_dir, host, sessions, counts)
            if daemon.process.poll() is not None:
                counts.note("server_errors", f"the daemon died on its own (exit {daemon.process.returncode}); see {daemon.log}")
            daemon.kill9()
            for follower in followers.values():
                follower.join(timeout=5)
            for s, follower in followers.items():
                sessions[s]["seen"] = follower.received

            daemon.start()
            if host and not wait_host(api, admin_token(state_dir), "lab", "connected"):
                counts.note("mismatches", f"host lab not connected within {HOST_TIMEOUT} s of the daemon's restart")
            followers = follow(api, sessions)
            # Events a client had: still there, in order, the same (replayed from ?since=0).
            for s, e in sessions.items():
                replay = caught_up(followers[s], len(e["seen"]))
                by_id = {ev["id"]: ev for ev in replay}
                ids = [ev["id"] for ev in replay]
                if ids != sorted(ids):
                    counts.note("lost_events", f"{s[:8]} replay out of order")
                for ev in e["seen"]:
                    kept = by_id.get(ev["id"])
                    if kept is None or kept.get("type") != ev.get("type") or kept.get("time") != ev.get("time"):
                        counts.note("lost_events", f"{s[:8]} event {ev} replayed as {kept}")
            # State against reality, for every session.
            for s, e in sessions.items():
                _, body = api.call("GET", f"/api/v1/sessions/{s}", token=e["token"])
                real = reality(state_dir, s)
                if where(s) == "lab":
                    # The daemon reconciles a host when it connects, in the background: a while to settle.
                    deadline = time.time() + 30
                    while not matches(body.get("state"), real := remote_reality(host, s)) and time.time() < deadline:
                        time.sleep(0.5)
                        _, body = api.call("GET", f"/api/v1/sessions/{s}", token=e["token"])
                if not matches(body.get("state"), real):
                    counts.note("mismatches", f"{s[:8]} is {body.get('state')} ({body.get('lastError')}) but the VM is {real}")
                # Snapshots: the daemon lists exactly those libvirt keeps (none once closed). On the lab, what a
                # killed run left is settled once the host answers: a while to settle, as above.
                kept = (lambda: remote_snapshots(host, s)) if where(s) == "lab" else (lambda: libvirt_snapshots(state_dir, s))
                deadline = time.time() + (30 if where(s) == "lab" else 0)
                while True:
                    _, listed = api.call("GET", f"/api/v1/sessions/{s}/snapshots", token=e["token"])
                    mine = sorted(snapshot["name"] for snapshot in listed.get("snapshots", []))
                    if mine == kept() or time.time() >= deadline:
                        break
                    time.sleep(0.5)
                if mine != kept():
                    counts.note("mismatches", f"{s[:8]} lists snapshots {mine} but libvirt keeps {kept()}")
            # Templates: each listed one has its files (on the lab: its volumes there and its header here); nothing
            # is left of one that is not listed. On the lab, what a killed run left goes once the host answers.
            deadline = time.time() + (30 if host else 0)
            while (wrong := template_leftovers(api, state_dir, host)) and time.time() < deadline:
                time.sleep(0.5)
            for kind, message in wrong:
                counts.note(kind, message)
            # Orphans: qemu or machine directories of no session of ours, or closed sessions' leftovers.
            for name, pids in qemu_pids().items():
                if name not in ours:
                    continue
                if len(pids) > 1:
                    counts.note("orphans", f"{name} has {len(pids)} qemu processes")
            # A guest's network lives as long as its VM's process: none without one.
            helpers = network_helpers()
            for s in sessions:
                if helpers.get(s) and reality(state_dir, s)["qemu"] == 0:
                    counts.note("orphans", f"{s[:8]} has network helpers {helpers[s]} but no VM process")
            for pid in probe_pids(state_dir):
                counts.note("orphans", f"qemu {pid} (a capability probe) outlived the daemon that started it")
            for directory in glob.glob(os.path.join(state_dir, "machines", "*")):
                if f"vms-{os.path.basename(directory)}" not in ours:
                    counts.note("orphans", f"machine directory {directory} of no session")
            db = sqlite3.connect(f"file:{state_dir}/vmsessiond.sqlite?mode=ro", uri=True, timeout=10)
            result = db.execute("PRAGMA integrity_check").fetchone()[0]
            db.close()
            if result != "ok":
                counts.note("integrity", result)
            # The next action works.
            _, body = api.call("GET", f"/api/v1/sessions/{sid}", token=token)
            state = body.get("state", "?")
            follow_ups = [a for a in NEXT_ACTIONS.get(state, []) if where(sid) != "lab" or a not in LOCAL_ONLY]
            if runs_from_template(body, api, state_dir):
                follow_ups = [a for a in follow_ups if a != "template"]
            follow_up = random.choice(follow_ups) if follow_ups else None
            if follow_up is None:
                counts.note("failed_next", f"{sid[:8]} left in {state}, no action possible")
                continue
            print(f"  then {follow_up}", flush=True)
            status, body = act(api, sid, token, follow_up, state_dir, where(sid))
            if status == 202:
                status, body = wait_operation(api, token, body["operation"]["id"])
                ok = body.get("status") == "succeeded"
            else:
                ok = status == 200
            if not ok:
                counts.note("failed_next", f"{sid[:8]} {state} -> {follow_up}: {status} {json.dumps(body)[:300]}")
        daemon.stop()
    finally:
        daemon.kill9()
        leftover = [pid for name, pids in qemu_pids().items() if name in ours for pid in pids] + probe_pids(state_dir)
        for pid in leftover:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if host:
            host.tear_down()
        # The VMs still running at the end were killed above; their network helpers are detached and go only
        # with a daemon's stop, so the run takes them down itself.
        for s, pids in network_helpers().items():
            if f"vms-{s}" in ours:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if args.keep:
            print(f"state kept in {workdir}")
        else:
            subprocess.run(["rm", "-rf", workdir])
    print(
        f"chaos: rounds={counts.rounds} mismatches={counts.mismatches} failed_next_actions={counts.failed_next} "
        f"5xx={counts.server_errors} lost_events={counts.lost_events} orphans={counts.orphans} "
        f"integrity_failures={counts.integrity} qemu_killed_at_end={len(leftover)}", flush=True)
    for note in counts.notes:
        print("  " + note)
    bad = counts.mismatches + counts.failed_next + counts.server_errors + counts.lost_events + counts.orphans + counts.integrity
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
