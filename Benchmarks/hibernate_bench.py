#!/usr/bin/env python3
"""Hibernate and restore through vmsessiond beside libvirt's own managed save, in one run (make bench).

For a 256 MiB and a 1 GiB appliance guest under TCG (QUICK: 256 MiB only, 2 runs):
  daemon      POST /hibernate -> its operation succeeded (GET /api/v1/operations/{id}/wait), and
              POST /start of the hibernated session (a restore) -> its operation succeeded;
  libvirt     virDomainManagedSave and virDomainCreate (which restores the managed save) on the same
              appliance, with no network (vmsessionbench-peer hibernate);
  layer       the same through the daemon's hypervisor layer (LibvirtHypervisor.hibernate / start, with the
              guest's network sandbox), which splits what the daemon adds into its hypervisor layer and the rest.
Prints p50s, the ratios daemon / libvirt beside the goals (hibernate <= 1 s, restore <= 0.25 s), and writes
--out as JSON. Both run under Benchmarks/reaper.py, which reaps QEMU the moment it exits, as systemd does
(a lazy PID 1 would otherwise add its own delay to every save: libvirt waits for the pid to be gone).
Nothing is asserted. Everything started is torn down at the end, also on failure.
"""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import API, wait  # noqa: E402

QUICK = os.environ.get("QUICK", "") not in ("", "0")
# Both sides run under a reaper, as under systemd (see reaper.py); REAPER=0 measures without it.
REAPER = [] if os.environ.get("REAPER") == "0" else [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reaper.py")]
GOAL_HIBERNATE_MS = 1000
GOAL_RESTORE_MS = 250


def spread(values):
    ordered = sorted(values)
    return {"runs": len(values), "p50": statistics.median(values), "min": ordered[0], "max": ordered[-1], "all": values}


def daemon_runs(api, path, runs, console):
    """Times hibernate and restore of the running session at `path`; `runs` of each."""
    hibernate, restore = [], []

    def timed(action):
        start = time.perf_counter()
        reply = api.call("POST", f"{path}/{action}", {})
        done = api.call("GET", f"/api/v1/operations/{reply['operation']['id']}/wait?timeout=120")
        elapsed = (time.perf_counter() - start) * 1000
        if done["status"] != "succeeded":
            raise RuntimeError(f"{action} failed: {done}")
        return elapsed

    for _ in range(runs):
        hibernate.append(timed("hibernate"))
        restore.append(timed("start"))
        # The restored guest runs on (its console answers) before it is hibernated again.
        time.sleep(0.5)
    return hibernate, restore


def run_daemon(args, work, memory, runs, binary=None, label="daemon"):
    state = os.path.join(work, f"{label}-{memory}")
    log_path = os.path.join(work, f"{label}-{memory}.log")
    log = open(log_path, "w")
    daemon = subprocess.Popen(
        REAPER + [binary or args.daemon, "--listen", "127.0.0.1:0", "--state-dir", state, "--accelerator", "tcg", "--appliance-dir", args.appliance,
         "--idle-source", "none", "--log-level", "notice"], stdout=log, stderr=log)
    api = None
    try:
        def port():
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(log_path).read())
            return int(match.group(1)) if match else None
        api = API(wait("the daemon to listen", port, timeout=60))
        grant = api.call("POST", "/api/v1/sessions", {"name": f"hibernate-{memory}", "secret": "bench-secret"})
        api.token = grant["token"]
        sid = grant["session"]["id"]
        path = f"/api/v1/sessions/{sid}"
        api.call("POST", path + "/open", {"memory": memory, "disk": 64})
        wait("open", lambda: api.call("GET", path)["state"] == "open")
        api.call("POST", path + "/start", {})
        console = os.path.join(state, "machines", sid, "console.log")
        wait("the guest to boot", lambda: os.path.exists(console) and b"VMSESSION-APPLIANCE: ready" in open(console, "rb").read(), timeout=180)
        result = daemon_runs(api, path, runs, console)
        api.call("POST", path + "/close", {})
        wait("closed", lambda: api.call("GET", path)["state"] == "closed", timeout=60)
        return result
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--baseline", help="another vmsessiond (an older build) measured the same way in the same run, before --daemon")
    parser.add_argument("--appliance", required=True)
    parser.add_argument("--out", default="artifacts/hibernate_bench.json")
    parser.add_argument("--runs", type=int, default=2 if QUICK else 5)
    parser.add_argument("--memory", default="256" if QUICK else "256,1024", help="comma-separated guest sizes in MiB")
    args = parser.parse_args()
    args.appliance = os.path.abspath(args.appliance)
    work = tempfile.mkdtemp(prefix="vms-hibernate-bench-")
    results = {"quick": QUICK, "goal": {"hibernateMs": GOAL_HIBERNATE_MS, "restoreMs": GOAL_RESTORE_MS}, "sizes": []}
    try:
        for memory in (int(m) for m in args.memory.split(",")):
            baseline = run_daemon(args, work, memory, args.runs, args.baseline, "baseline") if args.baseline else None
            hibernate, restore = run_daemon(args, work, memory, args.runs)
            output = subprocess.run(
                REAPER + [args.peer, "hibernate", "--state", os.path.join(work, f"peer-{memory}"), "--appliance", args.appliance,
                 "--runs", str(args.runs), "--memory", str(memory)], check=True, capture_output=True, text=True).stdout
            peer = json.loads(output.strip().splitlines()[-1])
            results["sizes"].append({
                "memoryMiB": memory,
                "daemon": {"hibernateMs": spread(hibernate), "restoreMs": spread(restore)},
                "libvirt": {"hibernateMs": spread(peer["hibernateMs"]), "restoreMs": spread(peer["restoreMs"])},
                "hypervisorLayer": {"hibernateMs": spread(peer["hypervisorHibernateMs"]), "restoreMs": spread(peer["hypervisorRestoreMs"])},
            })
            if baseline:
                results["sizes"][-1]["baseline"] = {"hibernateMs": spread(baseline[0]), "restoreMs": spread(baseline[1])}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"] = {"cpus": os.cpu_count(), "load": os.getloadavg()}
    print()
    print(f"load average {results['machine']['load'][0]:.1f} on {os.cpu_count()} CPUs")
    print(f"hibernate / restore, daemon vs libvirt's managed save (same run, TCG appliance, {args.runs} runs, p50)")
    print("=" * 100)
    for size in results["sizes"]:
        d, l, h = size["daemon"], size["libvirt"], size["hypervisorLayer"]
        for what, goal in (("hibernate", GOAL_HIBERNATE_MS), ("restore", GOAL_RESTORE_MS)):
            key = f"{what}Ms"
            ratio = d[key]["p50"] / l[key]["p50"]
            size[f"{what}Ratio"] = ratio
            print(f"{size['memoryMiB']:5d} MiB {what:9s}  daemon {d[key]['p50']:7.0f} ms   libvirt {l[key]['p50']:7.0f} ms   "
                  f"ratio {ratio:4.2f}   (hypervisor layer {h[key]['p50']:6.0f} ms)   goal <= {goal} ms: "
                  f"{'met' if d[key]['p50'] <= goal else 'missed'}")
            if "baseline" in size:
                print(f"{'':9s} {what:9s}  baseline {size['baseline'][key]['p50']:5.0f} ms (--baseline, same run)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nfigures as JSON: {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
