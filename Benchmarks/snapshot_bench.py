#!/usr/bin/env python3
"""Snapshots with memory, 256 MiB appliance under TCG: vmsessiond beside libvirt's own call, in one run.

  daemon  POST …/snapshots and …/snapshots/{name}/revert: request -> the operation's end (operations/…/wait)
  peer    libvirt's own virDomainSnapshotCreateXML / virDomainRevertToSnapshot (which starts a new QEMU with
          -loadvm) / virDomainSnapshotDelete, the daemon's hypervisor layer's revert (QEMU's loadvm in the running
          process; vmsessionbench-peer snapshots, one process), and the alternative's memory half:
          a save to a file of its own and its restore (managed save), which would also need a disk copy each

Nothing is asserted (shared, noisy machines); prints a table and writes the figures as JSON.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from daemon_overhead import Daemon, run_peer, spread, wait_for_console


def daemon_side(opts, work, runs, binary=None, label="daemon"):
    daemon = Daemon(binary or opts.daemon, os.path.join(work, label), "--accelerator", "tcg", "--appliance-dir", opts.appliance).start()
    create, revert = [], []
    try:
        session, token = daemon.new_session("snapshots")
        daemon.act(session, token, "open", {"cpus": 1, "memory": 256, "disk": 64})
        daemon.act(session, token, "start")
        wait_for_console(os.path.join(daemon.state, "machines", session, "console.log"), "VMSESSION-APPLIANCE: ready")
        base = f"/api/v1/sessions/{session}/snapshots"
        for index in range(runs):
            for samples, path, body in ((create, base, {"name": f"bench-{index}"}), (revert, f"{base}/bench-{index}/revert", {})):
                start = time.perf_counter()
                status, reply = daemon.call("POST", path, token, body)
                assert status == 202, reply
                _, done = daemon.call("GET", f"/api/v1/operations/{reply['operation']['id']}/wait?timeout=300", token)
                assert done["status"] == "succeeded", done
                samples.append((time.perf_counter() - start) * 1000)
            status, reply = daemon.call("DELETE", f"{base}/bench-{index}", token)
            assert status == 204, reply
        daemon.act(session, token, "close")
    finally:
        daemon.stop()
    return create, revert


def main():
    # Everything runs under Benchmarks/reaper.py, as hibernate_bench.py's daemons and peer do: libvirt's own
    # revert ends a QEMU and polls until its pid is gone, which a lazy PID 1 would otherwise stretch by seconds.
    if os.environ.get("REAPER") != "0" and os.environ.get("VMS_BENCH_UNDER_REAPER") != "1":
        os.environ["VMS_BENCH_UNDER_REAPER"] = "1"
        here = os.path.dirname(os.path.abspath(__file__))
        os.execv(sys.executable, [sys.executable, os.path.join(here, "reaper.py"), sys.executable, os.path.abspath(__file__)] + sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--baseline", help="another vmsessiond (an older build) measured the same way in the same run, before --daemon")
    parser.add_argument("--appliance", required=True)
    parser.add_argument("--out", default="artifacts/snapshot_bench.json")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "5")))
    opts = parser.parse_args()
    opts.appliance = os.path.abspath(opts.appliance)
    runs = 1 if os.environ.get("QUICK") == "1" else opts.runs
    work = tempfile.mkdtemp(prefix="vms-snapbench-")
    try:
        baseline = daemon_side(opts, work, runs, opts.baseline, "baseline") if opts.baseline else None
        create, revert = daemon_side(opts, work, runs)
        peer = run_peer(opts.peer, "snapshots", "--state", os.path.join(work, "peer"), "--appliance", opts.appliance, "--runs", str(runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
        "goalMs": 1000,
        "create": {"daemonMs": spread(create), "peerMs": spread(peer["createMs"])},
        "revert": {"daemonMs": spread(revert), "peerMs": spread(peer["revertMs"]), "hypervisorLayerMs": spread(peer["hypervisorRevertMs"])},
        "delete": {"peerMs": spread(peer["deleteMs"])},
        "alternativeSaveToFile": {"saveMs": spread(peer["saveMs"]), "restoreMs": spread(peer["restoreMs"])},
    }
    if baseline:
        results["create"]["baselineMs"], results["revert"]["baselineMs"] = spread(baseline[0]), spread(baseline[1])
    os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
    with open(opts.out, "w") as f:
        json.dump(results, f, indent=2)
    print("\nsnapshots with memory, 256 MiB appliance under TCG (same run; goal <= 1000 ms each)")
    for name in ("create", "revert"):
        d, p = results[name]["daemonMs"], results[name]["peerMs"]
        print(f"{name:7s} daemon p50 {d['p50']:8.0f} ms (min {d['min']:.0f}, max {d['max']:.0f})   "
              f"libvirt p50 {p['p50']:8.0f} ms   ratio {statistics.median(create if name == 'create' else revert) / p['p50']:.2f}  (n={d['runs']})")
    if baseline:
        print(f"baseline (--baseline, same run): create p50 {results['create']['baselineMs']['p50']:.0f} ms, "
              f"revert p50 {results['revert']['baselineMs']['p50']:.0f} ms")
    print(f"revert  hypervisor layer (loadvm in the running QEMU) p50 {results['revert']['hypervisorLayerMs']['p50']:.0f} ms")
    a = results["alternativeSaveToFile"]
    print(f"delete  libvirt p50 {results['delete']['peerMs']['p50']:.0f} ms;  alternative (save to a file / restore, memory only): "
          f"p50 {a['saveMs']['p50']:.0f} / {a['restoreMs']['p50']:.0f} ms")
    print(f"figures as JSON: {os.path.abspath(opts.out)}")


if __name__ == "__main__":
    main()
