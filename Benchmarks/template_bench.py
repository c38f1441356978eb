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
    seen, deadline = {}, time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            with open(path, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            text = b""
        now = time.perf_counter()
        for marker in markers:
            if marker not in seen and marker.encode() in text:
                seen[marker] = now
        if markers[-1] in seen:
            return seen
        time.sleep(0.002)
    raise TimeoutError(f"console never showed {markers[-1]}")


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


def daemon_steps(log_path, message):
    """Each `<step>Ms=<n>` of the daemon's debug lines that say `message`, as lists of milliseconds."""
    steps = {}
    try:
        text = open(log_path, errors="replace").read()
    except FileNotFoundError:
        return steps
    for line in text.splitlines():
        if message in line:
            for key, value in re.findall(r"(\w+)Ms=(\d+)", line):
                steps.setdefault(key, []).append(float(value))
    return steps


def settle(timeout=15.0, threshold=0.5):
    """Waits until the host is quiet again (at most `timeout` s): what ran just before a timed session (making a
    template: the source guest saved, its disk copied, the guest restored) would otherwise slow the guest timed
    next. Quiet: less than `threshold` of one core busy over a 0.5 s window (/proc/stat)."""

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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--appliance", required=True)
    parser.add_argument("--out", default="artifacts/template_bench.json")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "5")))
    opts = parser.parse_args()
    opts.appliance = os.path.abspath(opts.appliance)
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
    print(f"figures as JSON: {os.path.abspath(opts.out)}")


if __name__ == "__main__":
    main()
