#!/usr/bin/env python3
"""Execution-cap accuracy per cap mechanism, on real parts (make bench; QUICK=1 for a short run).

For each mechanism the real vmsessiond runs a busy appliance guest under TCG, and the guest is capped at
10, 25, 50 and 75 % of a core; the QEMU process's CPU share is measured from /proc/PID/stat:
  - libvirt:   the daemon as root on the embedded driver (libvirt's vcpu_quota per vCPU);
  - cgroup-v1: the daemon as the non-root user `vmsessiontest` (made if missing), started in a cgroup v1
               cpu directory chowned to it, as an admin would delegate one (a per-VM cgroup, cfs_quota_us).
Prints a table (measured share and error in points of a core) and writes --out as JSON. Needs root (to
make the user and the cgroup). Everything it starts (daemons, VMs, cgroups, temp dirs) is torn down.
"""
import argparse, json, os, pwd, re, shutil, signal, subprocess, sys, tempfile, time, uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import API, cpu_share, qemu_pid, wait  # noqa: E402


def call(port, method, path, body=None, token=None):
    """One API call to the daemon on `port`."""
    return API(port).call(method, path, body, token)


QUICK = os.environ.get("QUICK", "") not in ("", "0")
CAPS = [25, 50] if QUICK else [10, 25, 50, 75]
WINDOW = 3 if QUICK else 10
USER = "vmsessiontest"
CGROUP_V1 = "/sys/fs/cgroup/cpu"


def readable_by_user(path):
    return subprocess.run(["runuser", "-u", USER, "--", "test", "-r", path], capture_output=True).returncode == 0


class Run:
    """One daemon with one busy guest; torn down by close()."""

    def __init__(self, binary, appliance, workdir, user=False):
        self.binary, self.appliance, self.workdir, self.user, self.cgroup, self.process = binary, appliance, workdir, user, None, None
        self.log = None

    def start(self):
        binary, appliance, workdir, user = self.binary, self.appliance, self.workdir, self.user
        state, home = f"{workdir}/state", f"{workdir}/home"
        os.makedirs(state)
        os.makedirs(home)
        os.chmod(workdir, 0o755)
        self.log = open(f"{workdir}/daemon.log", "w")
        command = [binary, "--listen", "127.0.0.1:0", "--state-dir", state, "--accelerator", "tcg",
                   "--appliance-dir", appliance, "--stop-grace", "5"]
        if user:
            entry = pwd.getpwnam(USER)
            for path in (state, home):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self.cgroup = f"{CGROUP_V1}/vmsessiond-bench-{uuid.uuid4().hex[:8]}"
            os.mkdir(self.cgroup)
            for path in (self.cgroup, f"{self.cgroup}/cgroup.procs", f"{self.cgroup}/tasks"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            script = ('echo $$ > "$0/cgroup.procs" && exec setpriv --reuid="$1" --regid="$2" --clear-groups '
                      'env -u XDG_RUNTIME_DIR -u XDG_CONFIG_HOME -u XDG_STATE_HOME HOME="$3" "${@:4}"')
            command = ["bash", "-c", script, self.cgroup, str(entry.pw_uid), str(entry.pw_gid), home] + command
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = int(wait("the daemon to listen", lambda: self._port(), timeout=60))
        self.runtime = call(self.port, "GET", "/api/v1").get("runtime", {})
        grant = call(self.port, "POST", "/api/v1/sessions", {"name": "cap-bench", "secret": "s3cret"})
        self.id, self.token = grant["session"]["id"], grant["token"]
        session = f"/api/v1/sessions/{self.id}"
        call(self.port, "POST", session + "/open", {"memory": 256, "disk": 64}, self.token)
        wait("open", lambda: call(self.port, "GET", session, token=self.token)["state"] == "open")
        call(self.port, "POST", session + "/start", {"userData": "#!/bin/sh\necho busy guest\nwhile :; do :; done\n"}, self.token)
        console = f"{state}/machines/{self.id}/console.log"
        wait("the busy loop", lambda: os.path.exists(console) and "busy guest" in open(console, errors="replace").read())
        self.pid = wait("qemu", lambda: qemu_pid(self.id))

    def _port(self):
        if self.process.poll() is not None:
            raise RuntimeError("vmsessiond exited:\n" + open(f"{self.workdir}/daemon.log").read())
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(f"{self.workdir}/daemon.log").read())
        return match and match.group(1)

    def measure(self, cap):
        call(self.port, "PUT", f"/api/v1/sessions/{self.id}/execution-cap", {"cap": cap}, self.token)
        time.sleep(1)
        return cpu_share(self.pid, WINDOW)

    def close(self):
        try:
            if self.process and self.process.poll() is None:
                call(self.port, "POST", f"/api/v1/sessions/{self.id}/close", token=self.token)
                wait("close", lambda: call(self.port, "GET", f"/api/v1/sessions/{self.id}", token=self.token)["state"] == "closed", timeout=60)
        except Exception as error:  # teardown goes on
            print(f"close: {error}", file=sys.stderr)
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        pid = qemu_pid(getattr(self, "id", "-"))
        if pid:
            os.kill(pid, signal.SIGKILL)
        if self.cgroup and os.path.isdir(self.cgroup):
            for _ in range(50):
                children = [c for c in os.listdir(self.cgroup) if c.startswith("vms-")]
                pids = [p for c in children for p in open(f"{self.cgroup}/{c}/cgroup.procs").read().split()]
                pids += open(f"{self.cgroup}/cgroup.procs").read().split()
                if not pids:
                    break
                for p in pids:
                    try:
                        os.kill(int(p), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
            for child in os.listdir(self.cgroup):
                if child.startswith("vms-"):
                    os.rmdir(f"{self.cgroup}/{child}")
            os.rmdir(self.cgroup)
        if self.log:
            self.log.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--appliance", required=True)
    parser.add_argument("--out")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("cap_bench.py needs root: it makes the user and the cgroup the user-mode run needs")
    if subprocess.run(["getent", "passwd", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    top = tempfile.mkdtemp(prefix="vms-cap-bench-")
    os.chmod(top, 0o755)
    binary, appliance = args.binary, args.appliance
    if not (readable_by_user(binary) and readable_by_user(appliance + "/vmlinuz")):
        shutil.copytree(os.path.dirname(binary), f"{top}/bin", ignore=lambda d, names: [
            n for n in names if not (n == os.path.basename(binary) or n.endswith(".resources"))] if d == os.path.dirname(binary) else [])
        shutil.copytree(appliance, f"{top}/appliance")
        subprocess.run(["chmod", "-R", "a+rX", top], check=True)
        binary, appliance = f"{top}/bin/{os.path.basename(args.binary)}", f"{top}/appliance"
    results = []
    try:
        plans = [("root, embedded driver", False)]
        if os.path.exists(f"{CGROUP_V1}/cpu.cfs_quota_us"):
            plans.append((f"user {USER}, embedded driver, chowned cgroup v1", True))
        else:
            print("no cgroup v1 cpu hierarchy: the user-mode row is skipped (cgroup v2 needs a systemd user unit)")
        for label, user in plans:
            run = None
            try:
                run = Run(binary, appliance, tempfile.mkdtemp(prefix="run-", dir=top), user=user)
                run.start()
                uncapped = cpu_share(run.pid, WINDOW)
                for cap in CAPS:
                    share = run.measure(cap)
                    results.append({"mechanism": run.runtime.get("capMechanism"), "mode": run.runtime.get("mode"), "setup": label,
                                    "cap": cap, "share": round(share, 4), "errorPoints": round(share * 100 - cap, 2),
                                    "uncapped": round(uncapped, 4)})
            finally:
                if run:
                    run.close()
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print(f"\nExecution-cap accuracy (busy TCG guest, QEMU process CPU share over {WINDOW} s per cap)")
    print("(a share below its cap where 'uncapped' is not well above the cap is the shared machine starving the guest)")
    print(f"{'mechanism':<10} {'mode':<7} {'uncapped %':>11} {'cap %':>6} {'measured %':>11} {'error (points)':>15}")
    for row in results:
        print(f"{row['mechanism']:<10} {row['mode']:<7} {row['uncapped'] * 100:>11.1f} {row['cap']:>6} {row['share'] * 100:>11.1f} "
              f"{row['errorPoints']:>15.1f}")
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"quick": QUICK, "window": WINDOW, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

