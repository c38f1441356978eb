#!/usr/bin/env python3
"""Templates that start warm, 256 MiB appliance under TCG: a session from a template beside a cold start of
the same guest, in one run.

  cold      open (version appliance) + start with user-data -> `running` (operations/…/wait), and start ->
            the user-data's own line on the console (it ran)
  warm      open (version <template>) + start with user-data -> `running`, and start -> the user-data's line
            (the guest restored from the template's memory finds the session's seed and runs it)
  template  POST /api/v1/templates -> its operation's end (the prepared session's memory saved, its disk
            copied, the session restored), its bytes, and the bytes a warm session's own disk took
  steps     where a warm open and start spent their time, from the daemon's own debug log (each step timed
            by the daemon; steps that run side by side are timed each)
  idle CPU  what the first cold and warm guests cost the host while idle after their user-data ran (the
            guest's seed watch), over 5 s of their QEMU's CPU time

With --debian PATH (the Debian 12 guest of `make debian-guest`), after that the same daemon registers the image
(POST /api/v1/images, as DebianGuestTests does) and measures the Debian guest (512 MiB, real cloud-init) the
same way: one cold session (open version debian + start with a `#!/bin/sh` user-data), which then becomes the
prepared session a template is made from (once cloud-init's report is done and its seed watch waits, as in
DebianGuestTests), and --debian-runs warm sessions from that template, one after the other, each closed before
the next: open+start -> `running`, start -> the user-data's own line on the console, start -> cloud-init's
`done` line, the template's making time and bytes, and each warm session's own disk. Under TCG a cold boot
and cloud-init take minutes.

Nothing is asserted (shared, noisy machines); prints a table and writes the figures as JSON.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from daemon_overhead import Daemon, spread, wait_for_console


# The guest's own line when a warm guest took the session's seed (after the daemon's signal), before its user-data.
SEED_TAKEN = "VMSESSION-APPLIANCE: seed changed"


def wait_for_lines(path, markers, timeout=180):
    """When each of `markers` first showed on the console at `path` (perf_counter seconds), polled every 2 ms;
    waits for the last of them."""
    console = ConsoleWatch(path, interval=0.002)

    def found(_):
        console.note(markers, console.polled)
        return markers[-1] in console.seen

    console.wait(found, markers[-1], timeout)
    return console.seen


def timed_session(daemon, name, version, marker):
    """Opens and starts a session; returns ({open, start, openStart: ms to `running`; userData: start -> the user-data
    ran; ready: open -> the user-data ran; seedTaken: start -> a warm guest said it took the new seed}, session,
    token)."""
    session, token = daemon.new_session(name)
    OPENED.append((session, token))
    user_data = f"#!/bin/sh\necho {marker}\n"
    console = os.path.join(daemon.state, "machines", session, "console.log")
    begin = time.perf_counter()
    daemon.act(session, token, "open", {"cpus": 1, "memory": 256, "disk": 64, "version": version})
    started = time.perf_counter()
    daemon.act(session, token, "start", {"userData": user_data})
    running = time.perf_counter()
    seen = wait_for_lines(console, [SEED_TAKEN, marker] if version != "appliance" else [marker])
    ran = seen[marker]
    times = {"open": started - begin, "start": running - started, "openStart": running - begin, "userData": ran - started,
             "ready": ran - begin}
    if SEED_TAKEN in seen:
        times["seedTaken"] = seen[SEED_TAKEN] - started
    return {key: value * 1000 for key, value in times.items()}, session, token


# Every session opened, so that a run that fails half-way still closes their VMs (they outlive the daemon).
OPENED = []


def idle_cpu_percent(session, seconds=5.0):
    """The share of a host core the session's QEMU used over `seconds` (user + system time), or None."""
    found = subprocess.run(["pgrep", "-f", f"guest=vms-{session}"], capture_output=True, text=True).stdout.split()
    if not found:
        return None

    def used():
        fields = open(f"/proc/{found[0]}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before = used()
    time.sleep(seconds)
    return 100 * (used() - before) / seconds


def daemon_steps(log_path, message, offset=0):
    """Each `<step>Ms=<n>` of the daemon's debug lines that say `message`, as lists of milliseconds; only the lines
    after byte `offset` of the log (a later part of the run) if given."""
    steps = {}
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return steps
    for line in text.splitlines():
        if message in line:
            for key, value in re.findall(r"(\w+)Ms=(\d+)", line):
                steps.setdefault(key, []).append(float(value))
    return steps


def settle(timeout=15.0, threshold=0.5):
    """Waits until the host is quiet again (at most `timeout` s), so that what ran just before a timed session (making
    a template: the source guest saved, its disk copied, the guest restored) does not fall on the guest timed next.
    Quiet: less than `threshold` of one core busy over a 0.5 s window (/proc/stat)."""

    def busy_idle():
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(fields) - fields[3] - fields[4], fields[3] + fields[4]

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        busy, idle = busy_idle()
        time.sleep(0.5)
        busy2, idle2 = busy_idle()
        total = (busy2 - busy) + (idle2 - idle)
        if total and (busy2 - busy) / total * os.cpu_count() < threshold:
            return
    print("settle: the host stayed busy; timing anyway", flush=True)


def disk_bytes(path):
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


# The Debian guest (--debian). Its lines on the serial console (Contextualization/debian): the report service's
# status line after cloud-final (`done` on success; not the watch's "cloud-init ran again in N s"), its end, the
# seed watch waiting (the template is made after it, as DebianGuestTests does), and a warm guest taking its seed.
DEBIAN_STATUS = re.compile(rb"VMSESSION-DEBIAN: cloud-init (?!ran again |stage )(\S+)")
DEBIAN_RAN_AGAIN = re.compile(rb"VMSESSION-DEBIAN: cloud-init ran again in ([0-9.]+) s")
DEBIAN_REPORT_END = "VMSESSION-DEBIAN: report end"
DEBIAN_WATCH = "VMSESSION-DEBIAN: seed watch: "
DEBIAN_SEED_CHANGED = "VMSESSION-DEBIAN: seed changed: "
# A boot and cloud-init under TCG take minutes; this only bounds a hung guest (DebianGuestTests' bootTimeout).
DEBIAN_TIMEOUT = 900


class ConsoleWatch:
    """When lines first showed on a session's console (perf_counter seconds), read as the file grows (only what
    was added since the last read), every `interval` s: 10 ms by default, for a Debian console that holds a whole
    boot for minutes under TCG, where the figures are seconds; the appliance's sub-second figures poll every 2 ms."""

    def __init__(self, path, interval=0.01):
        self.path, self.interval, self.offset, self.text, self.seen, self.polled = path, interval, 0, b"", {}, None

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        self.offset += len(chunk)
        self.text += chunk
        self.polled = time.perf_counter()
        return self.polled

    def wait(self, found, what, timeout=DEBIAN_TIMEOUT):
        """Polls until `found(text)` is true; returns when it first was."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            now = self.poll()
            if found(self.text):
                return now
            time.sleep(self.interval)
        raise TimeoutError(f"console {self.path} never showed {what}")

    def note(self, markers, now):
        for marker in markers:
            if marker not in self.seen and marker.encode() in self.text:
                self.seen[marker] = now


def debian_user_data(marker):
    """A `#!/bin/sh` user-data that prints `marker` on the serial console. The script's text holds the marker
    split in two (printf joins it), so only its run can put the whole marker on the console."""
    head, tail = marker.split("-", 1)
    return f"#!/bin/sh\nprintf '%s-%s\\n' {head} {tail} > /dev/ttyS0\n"


def debian_session(daemon, state, name, open_body, marker, warm):
    """Opens and starts one Debian session and waits for cloud-init's status line on its console; returns
    ({open, start, openStart: ms to `running`; userData: start -> the user-data's line; cloudInit: start ->
    cloud-init's status line; seedTaken (warm): start -> the guest said its seed changed}, facts (cloud-init's
    status, the watch's "ran again in N s", its "seed changed" line), session, token, its ConsoleWatch)."""
    session, token = daemon.new_session(name)
    OPENED.append((session, token))
    console = ConsoleWatch(os.path.join(state, "machines", session, "console.log"))
    begin = time.perf_counter()
    daemon.act(session, token, "open", open_body)
    started = time.perf_counter()
    daemon.act(session, token, "start", {"userData": debian_user_data(marker)})
    running = time.perf_counter()
    markers = [marker] + ([DEBIAN_SEED_CHANGED] if warm else [])

    def done(text):
        console.note(markers, console.polled)
        return DEBIAN_STATUS.search(text) is not None

    finished = console.wait(done, "cloud-init's status line")
    console.note(markers, finished)
    times = {"open": started - begin, "start": running - started, "openStart": running - begin, "cloudInit": finished - started}
    if marker in console.seen:
        times["userData"] = console.seen[marker] - started
    if DEBIAN_SEED_CHANGED in console.seen:
        times["seedTaken"] = console.seen[DEBIAN_SEED_CHANGED] - started
    status = DEBIAN_STATUS.search(console.text).group(1).decode()
    again = DEBIAN_RAN_AGAIN.search(console.text)
    facts = {"cloudInitStatus": status, "cloudInitRanAgainS": float(again.group(1)) if again else None}
    if warm:
        line = next((l for l in console.text.decode(errors="replace").splitlines() if DEBIAN_SEED_CHANGED in l), "")
        facts["seedChanged"] = line.strip()
    return {key: value * 1000 for key, value in times.items()}, facts, session, token, console


def debian_part(daemon, admin, image, runs, result):
    """The Debian rows, into `result` as they are measured (a failure half-way keeps what came before):
    registers `image`, one cold session that becomes the template's prepared session, and `runs` warm sessions
    from the template. Every session it opens is in OPENED (closed by main's `finally`)."""
    result.update({"image": image, "memoryMiB": 512, "loadBefore": os.getloadavg()})
    log_offset = os.path.getsize(daemon.log_path)
    status, reply = daemon.call("POST", "/api/v1/images", admin, {"version": "debian", "path": image, "format": "qcow2"})
    assert status == 201, reply
    # The cold session: what DebianGuestTests opens (512 MiB; a disk under the image's 1 GiB is raised to it).
    settle()
    times, facts, source, source_token, console = debian_session(
        daemon, daemon.state, "debian-cold", {"version": "debian", "memory": 512, "disk": 2048}, "BENCHDEB-cold", warm=False)
    result["cold"], result["coldFacts"] = times, facts
    print(f"debian cold: {', '.join(f'{k} {v:.0f} ms' for k, v in times.items())}; cloud-init {facts['cloudInitStatus']}", flush=True)
    # The prepared session, as DebianGuestTests makes it: the report finished, the seed watch waiting.
    console.wait(lambda text: DEBIAN_REPORT_END.encode() in text and DEBIAN_WATCH.encode() in text, "the report's end and the seed watch")
    begin = time.perf_counter()
    status, reply = daemon.call("POST", "/api/v1/templates", admin, {"name": "debian-warm", "fromSession": source})
    assert status == 202, reply
    deadline = time.perf_counter() + DEBIAN_TIMEOUT
    while True:
        _, done = daemon.call("GET", f"/api/v1/operations/{reply['operation']['id']}/wait?timeout=60", admin)
        if done.get("status") not in ("pending", "running") or time.perf_counter() > deadline:
            break
    assert done["status"] == "succeeded", done
    result["makeTemplate"] = {"ms": (time.perf_counter() - begin) * 1000}
    _, listed = daemon.call("GET", "/api/v1/templates/debian-warm", admin)
    result["makeTemplate"]["bytes"] = listed["bytes"]
    print(f"debian template: {result['makeTemplate']['ms']:.0f} ms, {listed['bytes']} bytes", flush=True)
    # The template keeps its own disk copy and memory image: the source goes, so that its idle guest does not
    # share the 2 cores with the warm sessions measured next.
    daemon.act(source, source_token, "close")
    warm, facts_warm, session_disk = result.setdefault("warm", []), result.setdefault("warmFacts", []), result.setdefault("warmSessionDiskBytes", [])
    for index in range(runs):
        settle()
        times, facts, session, token, _ = debian_session(
            daemon, daemon.state, f"debian-warm-{index}", {"version": "debian-warm"}, f"BENCHDEB-warm-{index}", warm=True)
        path = os.path.join(daemon.state, "machines", session, "disk.qcow2")
        session_disk.append({"allocated": disk_bytes(path), "size": os.path.getsize(path) if os.path.exists(path) else 0})
        print(f"debian warm {index}: {', '.join(f'{k} {v:.0f} ms' for k, v in times.items())}; cloud-init {facts['cloudInitStatus']}"
              f" (ran again in {facts['cloudInitRanAgainS']} s); {facts.get('seedChanged', '')}", flush=True)
        warm.append(times)
        facts_warm.append(facts)
        daemon.act(session, token, "close")
    status, reply = daemon.call("DELETE", "/api/v1/templates/debian-warm", admin)
    assert status == 204, reply
    result["warmSteps"] = {"open": daemon_steps(daemon.log_path, "opened from a template", log_offset),
                           "start": daemon_steps(daemon.log_path, "started warm from a template", log_offset)}
    result["loadAfter"] = os.getloadavg()


def debian_summary(raw):
    """The JSON's `debian` part: each figure as a spread, beside the raw runs."""
    kinds = ("open", "start", "openStart", "userData", "cloudInit", "seedTaken")
    summary = dict(raw)
    summary["coldStart"] = {f"{k}Ms": spread([raw["cold"][k]] if k in raw.get("cold", {}) else []) for k in kinds}
    summary["warmStart"] = {f"{k}Ms": spread([run[k] for run in raw.get("warm", []) if k in run]) for k in kinds}
    summary["warmSteps"] = {phase: {k: spread(v) for k, v in found.items()} for phase, found in raw.get("warmSteps", {}).items()}
    return summary


def print_debian(d):
    if "error" in d:
        print(f"\nDebian guest: failed ({d['error']}); what it measured before is in the JSON")
    if "cold" not in d or not d.get("warm") or "loadAfter" not in d:
        return
    c, w = d["coldStart"], d["warmStart"]
    print(f"\ntemplates, 512 MiB Debian 12 guest with real cloud-init under TCG (same run; cold n=1, the template's "
          f"prepared session; load {d['loadBefore'][0]:.1f} before, {d['loadAfter'][0]:.1f} after)")
    rows = (("open", "open"), ("start to running", "start"), ("open+start to running", "openStart"),
            ("start -> user-data ran", "userData"), ("start -> cloud-init done", "cloudInit"))
    for label, key in rows:
        cold, warm = c[key + "Ms"]["p50"], w[key + "Ms"]["p50"]
        if not c[key + "Ms"]["runs"] or not w[key + "Ms"]["runs"]:
            print(f"{label:24s} cold n={c[key + 'Ms']['runs']}, warm n={w[key + 'Ms']['runs']}: its console line did not show in every session (the JSON has each run)")
            continue
        print(f"{label:24s} cold p50 {cold:8.0f} ms   warm p50 {warm:8.0f} ms   ratio {warm / cold:.2f}  (n={w[key + 'Ms']['runs']}; "
              f"warm {w[key + 'Ms']['min']:.0f} to {w[key + 'Ms']['max']:.0f} ms)")
    print("(a cold VM is `running` as soon as QEMU runs, before its guest has booted: start -> user-data ran is the"
          " figure a page feels)")
    print("cloud-init status: cold " + d["coldFacts"]["cloudInitStatus"] + ", warm "
          + ", ".join(f"{f['cloudInitStatus']} (ran again in {f['cloudInitRanAgainS']} s)" for f in d["warmFacts"]))
    if w["seedTakenMs"]["runs"]:
        print(f"warm start -> the guest took its seed (console 'seed changed') p50 {w['seedTakenMs']['p50']:.0f} ms")
    print(f"make a template         {d['makeTemplate']['ms']:8.0f} ms, {d['makeTemplate']['bytes'] / 1048576:.0f} MiB;  "
          "each warm session's own disk: "
          + ", ".join(f"{disk['allocated'] / 1048576:.1f} MiB" for disk in d["warmSessionDiskBytes"]) + " (allocated)")
    for phase, found in d["warmSteps"].items():
        if found:
            print(f"warm {phase} steps (daemon log, p50 ms): " + ", ".join(f"{key} {value['p50']:.0f}" for key, value in found.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--appliance", required=True)
    parser.add_argument("--out", default="artifacts/template_bench.json")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "5")))
    parser.add_argument("--debian", help="the Debian guest's debian.qcow2 (`make debian-guest`): adds its rows")
    parser.add_argument("--debian-runs", type=int, default=1, help="warm Debian sessions from its template")
    opts = parser.parse_args()
    opts.appliance = os.path.abspath(opts.appliance)
    debian = None
    runs = 1 if os.environ.get("QUICK") == "1" else opts.runs
    work = tempfile.mkdtemp(prefix="vms-tplbench-")
    # At debug level: the daemon logs where each warm open and start spent its time (see daemon_steps).
    daemon = Daemon(opts.daemon, os.path.join(work, "daemon"), "--accelerator", "tcg", "--appliance-dir", opts.appliance,
                    "--log-level", "debug").start()
    kinds = ("open", "start", "openStart", "userData", "ready")
    cold, warm = {k: [] for k in kinds}, {k: [] for k in kinds}
    make, template_bytes, session_disk, idle_cpu, seed_taken = [], 0, [], {}, []
    try:
        admin = open(os.path.join(daemon.state, "admin-token")).read().strip()
        source, source_token = daemon.new_session("template-source")
        OPENED.append((source, source_token))
        daemon.act(source, source_token, "open", {"cpus": 1, "memory": 256, "disk": 64, "version": "appliance"})
        daemon.act(source, source_token, "start", {"userData": "#!/bin/sh\necho prepared\n"})
        wait_for_console(os.path.join(daemon.state, "machines", source, "console.log"), "VMSESSION-APPLIANCE: ready")
        for index in range(runs):
            name = f"bench-{index}"
            begin = time.perf_counter()
            status, reply = daemon.call("POST", "/api/v1/templates", admin, {"name": name, "fromSession": source})
            assert status == 202, reply
            _, done = daemon.call("GET", f"/api/v1/operations/{reply['operation']['id']}/wait?timeout=300", admin)
            assert done["status"] == "succeeded", done
            make.append((time.perf_counter() - begin) * 1000)
            _, listed = daemon.call("GET", f"/api/v1/templates/{name}", admin)
            template_bytes = listed["bytes"]
            for samples, version, label in ((cold, "appliance", "cold"), (warm, name, "warm")):
                settle()
                times, session, token = timed_session(daemon, f"{label}-{index}", version, f"BENCH-UD-{label}-{index}")
                for key in kinds:
                    samples[key].append(times[key])
                if "seedTaken" in times:
                    seed_taken.append(times["seedTaken"])
                if label == "warm":
                    session_disk.append(disk_bytes(os.path.join(daemon.state, "machines", session, "disk.qcow2")))
                if index == 0:
                    idle_cpu[label] = idle_cpu_percent(session)
                daemon.act(session, token, "close")
            status, reply = daemon.call("DELETE", f"/api/v1/templates/{name}", admin)
            assert status == 204, reply
        daemon.act(source, source_token, "close")
        steps = {"open": daemon_steps(daemon.log_path, "opened from a template"),
                 "start": daemon_steps(daemon.log_path, "started warm from a template")}
        if opts.debian:
            # A failure here still leaves the appliance's figures to write (and the sessions to close, below).
            debian = {}
            try:
                debian_part(daemon, admin, os.path.abspath(opts.debian), opts.debian_runs, debian)
            except Exception as error:
                debian["error"] = repr(error)
                debian["loadAfterError"] = os.getloadavg()
    finally:
        for session, token in OPENED:
            try:
                daemon.act(session, token, "close")
            except Exception:
                pass
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
        "coldStart": {f"{key}Ms": spread(cold[key]) for key in kinds},
        "warmStart": {f"{key}Ms": spread(warm[key]) for key in kinds},
        "makeTemplate": {"ms": spread(make), "bytes": template_bytes},
        "warmSessionDiskBytes": session_disk,
        "warmSeedTakenMs": spread(seed_taken),
        "warmSteps": {phase: {key: spread(values) for key, values in found.items()} for phase, found in steps.items()},
        "idleGuestCPUPercent": idle_cpu,
    }
    if debian is not None:
        results["debian"] = debian_summary(debian)
    os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
    with open(opts.out, "w") as f:
        json.dump(results, f, indent=2)
    c, w = results["coldStart"], results["warmStart"]
    print("\ntemplates, 256 MiB appliance under TCG (same run; goals: warm <= 1000 ms and <= 0.25x cold; user-data <= 1500 ms)")
    rows = (("open", "open"), ("start to running", "start"), ("open+start to running", "openStart"),
            ("start -> user-data ran", "userData"), ("open -> user-data ran", "ready"))
    for label, key in rows:
        print(f"{label:24s} cold p50 {c[key + 'Ms']['p50']:8.0f} ms   warm p50 {w[key + 'Ms']['p50']:8.0f} ms   "
              f"ratio {w[key + 'Ms']['p50'] / c[key + 'Ms']['p50']:.2f}  (n={w[key + 'Ms']['runs']})")
    print("(a cold VM is `running` as soon as QEMU runs, before its guest has booted: open -> user-data ran is the"
          " figure a page feels)")
    print(f"make a template         p50 {results['makeTemplate']['ms']['p50']:8.0f} ms, {template_bytes / 1048576:.0f} MiB;  "
          f"a warm session's own disk: {max(session_disk or [0]) / 1024:.0f} KiB")
    if seed_taken:
        print(f"warm start -> the guest took its seed (console 'seed changed') p50 {results['warmSeedTakenMs']['p50']:.0f} ms")
    for phase, found in results["warmSteps"].items():
        print(f"warm {phase} steps (daemon log, p50 ms): " + ", ".join(f"{key} {value['p50']:.0f}" for key, value in found.items()))
    print("idle guest CPU (share of a host core, seed watch included): "
          + ", ".join(f"{label} {value:.1f} %" for label, value in idle_cpu.items() if value is not None))
    if debian is not None:
        print_debian(results["debian"])
    print(f"figures as JSON: {os.path.abspath(opts.out)}")


if __name__ == "__main__":
    main()
