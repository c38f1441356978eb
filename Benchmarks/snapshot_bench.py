#!/usr/bin/env python3
"""Snapshots with memory, 256 MiB appliance under TCG: vmsessiond beside libvirt's own call, in one run.

  daemon  POST …/snapshots and …/snapshots/{name}/revert: request -> the operation's end (operations/…/wait)
  peer    virDomainSnapshotCreateXML / virDomainRevertToSnapshot / virDomainSnapshotDelete through the same
          LibvirtHypervisor in one process (vmsessionbench-peer snapshots), and the alternative's memory half:
          a save to a file of its own and its restore (managed save), which would also need a disk copy each

Nothing is asserted (shared, noisy machines); prints a table and writes the figures as JSON.
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from daemon_overhead import Daemon, run_peer, spread, wait_for_console


def daemon_side(opts, work, runs):
    daemon = Daemon(opts.daemon, os.path.join(work, "daemon"), "--accelerator", "tcg", "--appliance-dir", opts.appliance).start()
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--appliance", required=True)
    parser.add_argument("--out", default="artifacts/snapshot_bench.json")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "5")))
    opts = parser.parse_args()
    opts.appliance = os.path.abspath(opts.appliance)
    runs = 1 if os.environ.get("QUICK") == "1" else opts.runs
    work = tempfile.mkdtemp(prefix="vms-snapbench-")
    try:
        create, revert = daemon_side(opts, work, runs)
        peer = run_peer(opts.peer, "snapshots", "--state", os.path.join(work, "peer"), "--appliance", opts.appliance, "--runs", str(runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
        "create": {"daemonMs": spread(create), "peerMs": spread(peer["createMs"])},
        "revert": {"daemonMs": spread(revert), "peerMs": spread(peer["revertMs"])},
        "delete": {"peerMs": spread(peer["deleteMs"])},
        "alternativeSaveToFile": {"saveMs": spread(peer["saveMs"]), "restoreMs": spread(peer["restoreMs"])},
    }
    os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
    with open(opts.out, "w") as f:
        json.dump(results, f, indent=2)
    print("\nsnapshots with memory, 256 MiB appliance under TCG (same run; goal <= 1000 ms each)")
    for name in ("create", "revert"):
        d, p = results[name]["daemonMs"], results[name]["peerMs"]
        print(f"{name:7s} daemon p50 {d['p50']:8.0f} ms (min {d['min']:.0f}, max {d['max']:.0f})   "
              f"libvirt p50 {p['p50']:8.0f} ms   ratio {statistics.median(create if name == 'create' else revert) / p['p50']:.2f}  (n={d['runs']})")
    a = results["alternativeSaveToFile"]
    print(f"delete  libvirt p50 {results['delete']['peerMs']['p50']:.0f} ms;  alternative (save to a file / restore, memory only): "
          f"p50 {a['saveMs']['p50']:.0f} / {a['restoreMs']['p50']:.0f} ms")
    print(f"figures as JSON: {os.path.abspath(opts.out)}")


if __name__ == "__main__":
    main()
