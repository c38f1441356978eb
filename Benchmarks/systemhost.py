"""Root's system libvirt reached over real SSH as root, made on this machine: the Python twin of
Tests/EndToEndTests/SystemSSHHost.swift (over TLSLibvirtHost.swift's kind .system), as far as the benchmarks need.

Why it exists beside sshhost.py: a user's session libvirt offers no execution cap (422 not_supported), while a
system libvirt caps a guest through its scheduler quota, and `qemu+ssh://root@HOST/system` is how an admin's pool
host is most often listed. So hosts_bench measures the cap over SSH against a host of this kind.

What it makes: root's libvirtd and the virtlogd it sends QEMU's output through, in a mount namespace of their own
(`unshare --mount --propagation private`) over this fixture's own copies of /etc/libvirt, /run/libvirt,
/var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt, so that it neither sees nor writes this machine's
libvirt (the system driver keeps its domains' and pools' definitions in /etc/libvirt). libvirtd starts only once
every one of those five is checked to BE the fixture's directory (same device and inode); a failed bind ends the
shell before libvirtd. Both daemons get pid files of the fixture's own: their defaults (/run/libvirtd.pid,
/run/virtlogd.pid) are this machine's /run. No TLS and no TCP: libvirtd listens on its UNIX sockets only.

Beside it, Debian's sshd on a loopback port of its own, run INSIDE that mount namespace (nsenter), admitting root
with a key made here (`PermitRootLogin prohibit-password`), so virt-ssh-helper finds the system socket at its usual
place as on a real host. The URI is `qemu+ssh://root@127.0.0.1:PORT/system?keyfile=…&command=…`, `command` a
wrapper around ssh with a known_hosts file of its own (StrictHostKeyChecking=yes): root's ~/.ssh is neither read
nor written. QEMU runs as libvirt-qemu; the daemon makes its pool at /var/lib/libvirt/images/vmsessiond there.

`tear_down()` stops the sshd and libvirtd, then kills every process whose mount table shows the fixture's
directory (virtlogd, SSH sessions, virt-ssh-helper, and QEMU, which libvirt starts in a mount namespace of the VM's
own, inherited from libvirtd's): not every libvirt-qemu process, since other system libvirt hosts (another
engineer's tests) may run QEMU as that user at the same time. Then it removes every file. Use it as a context
manager (`with SystemHost.start() as host:`). Root only; traffic to loopback only.
"""
import os, shutil, signal, socket, subprocess, time, uuid

from sshhost import _can_connect, _free_loopback_port, _processes, _run, _signal, write_ssh_files

# Inside the namespace -> the fixture's subdirectory bound over it.
BINDS = (("/etc/libvirt", "etc"), ("/run/libvirt", "run"), ("/var/lib/libvirt", "lib"),
         ("/var/cache/libvirt", "cache"), ("/var/log/libvirt", "log"))


def _socket_answers(path):
    with socket.socket(socket.AF_UNIX) as s:
        return s.connect_ex(path) == 0


class SystemHost:
    """One SSH-reached system libvirt host (see the module's doc)."""

    def __init__(self, tag, directory, libvirtd):
        self.tag, self.directory, self.libvirtd = tag, directory, libvirtd
        self.ssh_directory = directory + "/ssh"
        self.port = None
        self.sshd = None
        self._torn_down = False

    @property
    def uri(self):
        """The remote URI, as a daemon lists the host."""
        return (f"qemu+ssh://root@127.0.0.1:{self.port}/system"
                f"?keyfile={self.ssh_directory}/client_ed25519&command={self.ssh_directory}/ssh")

    @classmethod
    def start(cls):
        """Starts the namespaced system libvirtd + virtlogd, then sshd inside their namespace. Needs root and
        openssh-server; raises (having torn everything down) if either does not come up."""
        if os.geteuid() != 0:
            raise RuntimeError("a system libvirt host runs root's libvirtd in a mount namespace: run as root")
        if not os.access("/usr/sbin/sshd", os.X_OK):
            raise RuntimeError("SSH hosts need Debian's openssh-server (make deps-test installs it)")
        for target, _ in BINDS:
            if not os.path.isdir(target):
                # Made by libvirt-daemon's packages; creating one here would leave a directory on this machine.
                raise RuntimeError(f"{target} is missing (install libvirt-daemon-system)")
        tag = uuid.uuid4().hex[:8]
        # Short: libvirt's UNIX sockets under run/ are reached by this path from outside the namespace. Not "vmsys-":
        # SystemSSHHost.swift names its users so, and a reader of /tmp should not take one for the other.
        directory = f"/tmp/vmsysh-{tag}"
        os.mkdir(directory)
        os.chmod(directory, 0o755)
        host = None
        try:
            checks, binds = [], []
            for target, name in BINDS:
                source = f"{directory}/{name}"
                os.mkdir(source)
                os.chmod(source, 0o755)
                binds.append(f"mount --bind {source} {target}")
                checks.append(f'[ "$(stat -c %d:%i {target})" = "$(stat -c %d:%i {source})" ]')
            with open(f"{directory}/libvirtd.conf", "w") as f:
                f.write("listen_tls = 0\nlisten_tcp = 0\n")
            script = " && ".join([
                "set -e", *binds, *checks,
                # virtlogd first: the system QEMU driver sends QEMU's output through it (systemd starts it by its
                # socket on a real host).
                f"/usr/sbin/virtlogd -d -p {directory}/virtlogd.pid",
                f"exec /usr/sbin/libvirtd -p {directory}/libvirtd.pid -f {directory}/libvirtd.conf"])
            log = open(f"{directory}/libvirtd.log", "ab")
            libvirtd = subprocess.Popen(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            host = cls(tag, directory, libvirtd)
            deadline = time.monotonic() + 30
            while not _socket_answers(f"{directory}/run/libvirt-sock"):
                if libvirtd.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the system libvirtd did not come up; see {directory}/libvirtd.log: "
                                       + open(f"{directory}/libvirtd.log", errors="replace").read()[-2000:])
                time.sleep(0.025)
            # The socket is in the fixture's run/ only once the binds are made and libvirtd runs: pid is libvirtd's
            # now, in the namespace it made, never this machine's (which nsenter would otherwise put sshd in).
            namespace = os.readlink(f"/proc/{libvirtd.pid}/ns/mnt")
            if namespace == os.readlink("/proc/self/ns/mnt"):
                raise RuntimeError("libvirtd runs in this machine's mount namespace")
            host._start_sshd()
            return host
        except BaseException:
            if host:
                host.tear_down()
            else:
                shutil.rmtree(directory, ignore_errors=True)
            raise

    def _start_sshd(self):
        directory = self.ssh_directory
        os.mkdir(directory)
        port = _free_loopback_port()
        write_ssh_files(directory, port, "root", permit_root=True)
        _run("/usr/sbin/sshd", "-t", "-f", f"{directory}/sshd_config")
        log = open(f"{directory}/sshd.log", "ab")
        # nsenter execs sshd in its own process (entering a mount namespace needs no fork): this Popen is sshd.
        self.sshd = subprocess.Popen(["/usr/bin/nsenter", f"--mount=/proc/{self.libvirtd.pid}/ns/mnt", "--",
                                      "/usr/sbin/sshd", "-D", "-e", "-f", f"{directory}/sshd_config"],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.port = port
        deadline = time.monotonic() + 5
        while not _can_connect(port):
            if self.sshd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port}; see {directory}/sshd.log")
            time.sleep(0.025)

    def virsh(self, *arguments, check=True):
        """virsh against this host, over its SSH transport."""
        result = subprocess.run(["virsh", "-q", "-c", self.uri, *arguments], capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"virsh {' '.join(arguments)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def domains(self):
        return [line.strip() for line in self.virsh("list", "--all", "--name").splitlines() if line.strip()]

    def volumes(self):
        """The volumes of the daemon's `vmsessiond` pool ([] while the daemon has not made it)."""
        pools = [line.strip() for line in self.virsh("pool-list", "--all", "--name").splitlines() if line.strip()]
        if "vmsessiond" not in pools:
            return []
        return [line.split()[0] for line in self.virsh("vol-list", "vmsessiond").splitlines() if line.strip()]

    def processes(self):
        """Live processes (zombies left out) whose mount table shows the fixture's directory, as (pid, comm):
        libvirtd, virtlogd, sshd and its sessions, QEMU."""
        found, marker = [], f"/vmsysh-{self.tag}/"
        for pid, _, _, state, comm in _processes():
            if state == "Z" or pid == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/mountinfo") as f:
                    if marker in f.read():
                        found.append((pid, comm))
            except OSError:
                continue
        return found

    def tear_down(self):
        """Stops sshd and libvirtd, kills what is left of the host's processes, removes its files. Idempotent."""
        if self._torn_down:
            return
        self._torn_down = True
        for child in (self.sshd, self.libvirtd):
            if child is None or child.poll() is not None:
                continue
            child.terminate()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for _ in range(100):
            left = self.processes()
            if not left:
                break
            for pid, _ in left:
                _signal(pid, signal.SIGCONT)
                _signal(pid, signal.SIGKILL)
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the system host's processes outlived SIGKILL: {self.processes()}")
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.tear_down()
