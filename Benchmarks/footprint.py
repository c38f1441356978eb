#!/usr/bin/env python3
"""Where vmsessiond's memory goes: RSS and PSS idle and with N sessions, part by part, beside libvirtd.

Starts each given daemon binary (test driver and a fresh state directory each run, or with --embedded the
embedded QEMU driver) RUNS times, waits until start-up has settled (the daemon releases its start-up memory
2 s after it listens; this waits 4 s), and reads /proc/PID/smaps_rollup (RSS, PSS) and /proc/PID/smaps (each mapping, grouped into parts). Then it
creates N sessions in one more run of each and reads the same. libvirtd (test driver, one client
connected) is measured in the same run. Prints medians; --out writes every sample as JSON.

RSS counts every page mapped, shared or not; PSS divides each shared page among the processes that map it
(libc, libstdc++, libcrypto and the other libraries that most processes map count a fraction). Both are
given because the daemon's file-backed pages (its binary, its libraries) are most of its RSS.

  python3 Benchmarks/footprint.py --daemon before/vmsessiond --daemon .build-release/release/vmsessiond
"""

import argparse
import collections
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_overhead import Daemon, start_libvirtd  # noqa: E402

SETTLE_SECONDS = 4


def rollup(pid):
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0].endswith(":") and len(parts) > 1 and parts[1].isdigit():
                values[parts[0][:-1]] = int(parts[1])
    return values


def part_of(path, binary):
    """The part of the footprint a mapping belongs to (README, "Where the memory goes")."""
    if path == binary:
        return "binary"
    name = os.path.basename(path)
    if path.startswith("/") and name.startswith("libvirt"):
        return "libvirt"
    if path.startswith("/") and (".so" in name):
        return "libraries"
    if path == "[heap]":
        return "heap"
    if path.startswith("["):
        return "other"
    return "anonymous"


def parts(pid, binary):
    """RSS, PSS and anonymous KiB of each part; the binary's split by permissions (code, read-only, data)."""
    totals = collections.defaultdict(collections.Counter)
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                path = " ".join(fields[5:]) if len(fields) > 5 else ""
                part = part_of(os.path.realpath(path) if path.startswith("/") else path, binary)
                if part == "binary":
                    part += " " + fields[1]
                current = totals[part]
            elif fields[0] in ("Rss:", "Pss:", "Anonymous:"):
                current[fields[0][:-1]] += int(fields[1])
    return {name: dict(values) for name, values in totals.items()}


def measure(pid, binary):
    r = rollup(pid)
    by_part = parts(pid, binary)
    return {"rssKiB": r["Rss"], "pssKiB": r["Pss"], "anonKiB": r["Anonymous"], "fileKiB": r["Rss"] - r["Anonymous"],
            "threads": len(os.listdir(f"/proc/{pid}/task")), "parts": by_part}


def run_daemon(binary, work, label, sessions=0, appliance=None):
    limits = ["--limit", "sessions=100000", "--limit", "sessionsPerOrigin=100000"]
    if appliance:
        # The embedded QEMU driver (the daemon's default): one state directory per binary, so that QEMU's
        # capabilities are probed once (20 s under TCG) and not in every run.
        state = os.path.join(work, "embedded-" + os.path.basename(os.path.dirname(os.path.realpath(binary))) + str(abs(hash(binary))))
        daemon = Daemon(binary, state, "--appliance-dir", appliance, *limits).start(timeout=180)
    else:
        state = tempfile.mkdtemp(prefix=f"{label}-", dir=work)
        daemon = Daemon(binary, state, "--libvirt-uri", "test:///default", *limits).start()
    try:
        time.sleep(SETTLE_SECONDS)
        idle = measure(daemon.process.pid, os.path.realpath(binary))
        loaded = None
        if sessions:
            for i in range(sessions):
                daemon.new_session(f"s{i}")
            time.sleep(SETTLE_SECONDS)
            loaded = measure(daemon.process.pid, os.path.realpath(binary))
        return idle, loaded
    finally:
        daemon.stop()


def libvirtd_footprint(work):
    process, uri = start_libvirtd(work)
    try:
        libvirt = ctypes.CDLL("libvirt.so.0")
        libvirt.virConnectOpen.restype = ctypes.c_void_p
        connection = libvirt.virConnectOpen(uri.encode())
        assert connection, "virConnectOpen failed"
        libvirt.virConnectNumOfDomains(ctypes.c_void_p(connection))
        time.sleep(1)
        r = rollup(process.pid)
        libvirt.virConnectClose(ctypes.c_void_p(connection))
        return {"rssKiB": r["Rss"], "pssKiB": r["Pss"], "anonKiB": r["Anonymous"]}
    finally:
        process.terminate()
        process.wait(10)


def median_of(samples, key):
    return statistics.median(s[key] for s in samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daemon", action="append", required=True, help="a vmsessiond binary; repeat to compare")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--embedded", metavar="APPLIANCE_DIR", help="run on the embedded QEMU driver (as the daemon does by default) instead of test:///default")
    parser.add_argument("--out")
    opts = parser.parse_args()
    work = tempfile.mkdtemp(prefix="vms-footprint-")
    results = {"settleSeconds": SETTLE_SECONDS, "daemons": {}}
    try:
        # A root libvirtd takes driver locks under /run/libvirt: while another one runs on the machine this
        # one cannot start, and the daemon's figures are given without it.
        for attempt in range(3):
            try:
                results["libvirtd"] = libvirtd_footprint(os.path.join(work, f"libvirtd{attempt}"))
                break
            except RuntimeError as error:
                results["libvirtd"] = {"error": str(error)}
                time.sleep(5)
        # Interleaved, so that whatever else the machine does falls on every binary alike.
        idle = {binary: [] for binary in opts.daemon}
        for run in range(opts.runs):
            for binary in opts.daemon:
                idle[binary].append(run_daemon(binary, work, f"idle{run}", appliance=opts.embedded)[0])
        for binary in opts.daemon:
            loaded = run_daemon(binary, work, "loaded", opts.sessions, appliance=opts.embedded)[1] if opts.sessions else None
            results["daemons"][binary] = {"idle": idle[binary], "withSessions": loaded, "sessions": opts.sessions}
    finally:
        subprocess.run(["rm", "-rf", work])
    mib = lambda kib: f"{kib / 1024:6.1f}"  # noqa: E731
    lv = results["libvirtd"]
    if "error" in lv:
        print(f"libvirtd: not measured ({lv['error']})")
    else:
        print(f"libvirtd (test driver, one client): RSS {mib(lv['rssKiB'])} MiB  PSS {mib(lv['pssKiB'])} MiB  anon {mib(lv['anonKiB'])} MiB")
    for binary, figures in results["daemons"].items():
        samples = figures["idle"]
        print(f"\n{binary}: idle, median of {len(samples)} (RSS {sorted(s['rssKiB'] // 1024 for s in samples)} MiB)")
        print(f"  RSS {mib(median_of(samples, 'rssKiB'))} MiB  PSS {mib(median_of(samples, 'pssKiB'))} MiB  "
              f"anon {mib(median_of(samples, 'anonKiB'))} MiB  file {mib(median_of(samples, 'fileKiB'))} MiB  threads {samples[0]['threads']}")
        names = sorted({name for s in samples for name in s["parts"]})
        for name in names:
            rss = statistics.median(s["parts"].get(name, {}).get("Rss", 0) for s in samples)
            pss = statistics.median(s["parts"].get(name, {}).get("Pss", 0) for s in samples)
            anon = statistics.median(s["parts"].get(name, {}).get("Anonymous", 0) for s in samples)
            print(f"    {name:22s} RSS {mib(rss)}  PSS {mib(pss)}  anon {mib(anon)}")
        if figures["withSessions"]:
            w = figures["withSessions"]
            print(f"  with {figures['sessions']} sessions: RSS {mib(w['rssKiB'])} MiB  PSS {mib(w['pssKiB'])} MiB  anon {mib(w['anonKiB'])} MiB")
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
