"""A libvirt host reached over real SSH, made on this machine: the Python twin of Tests/EndToEndTests/SSHLibvirtHost.swift.

It exists so that benchmarks and the chaos run drive sessions on a remote host the way the end-to-end tests do:
an unprivileged user of its own, Debian's sshd on a loopback port of its own (a host key and an authorized client
key made here), and that user's session libvirtd behind it (autostarted by virt-ssh-helper), reached as
`qemu+ssh://USER@127.0.0.1:PORT/session?keyfile=…&command=…`. The host key is checked for real: `command` is a
wrapper around ssh with a known_hosts file of its own (StrictHostKeyChecking=yes), so root's ~/.ssh is neither read
nor written. Root only; traffic to loopback only.

`tear_down()` kills every process of the user (libvirtd, QEMU, SSH sessions) and the sshd, deletes the user and
removes every file. Use it as a context manager (`with SSHHost.start() as host:`).
"""
import os, pwd, shutil, signal, socket, subprocess, time, uuid


def _run(*arguments):
    result = subprocess.run(list(arguments), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def _account(*arguments):
    """useradd or userdel, tried again for a while: another process holding /etc/passwd's lock makes it fail at once."""
    last = ""
    for _ in range(30):
        result = subprocess.run(list(arguments), capture_output=True, text=True)
        if result.returncode == 0:
            return
        last = result.stdout + result.stderr
        time.sleep(0.1)
    raise RuntimeError(f"{' '.join(arguments)} failed: {last}")


def _free_loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _can_connect(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def write_ssh_files(directory, port, user, permit_root=False):
    """What a test host's own sshd and its client need in `directory`: a host key and a client key (the client's
    authorized), sshd_config (loopback `port`, key login for `user` only; root too when `permit_root`), and `ssh`, a
    wrapper that checks the host key against a known_hosts of its own, so root's ~/.ssh is neither read nor written.
    Shared by SSHHost and systemhost.SystemHost (as SSHLibvirtHost.writeSSHFiles is by the Swift fixtures)."""
    for key, comment in (("host_ed25519", "host"), ("client_ed25519", "client")):
        _run("/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", f"{directory}/{key}")
    shutil.copy(f"{directory}/client_ed25519.pub", f"{directory}/authorized_keys")
    os.chmod(f"{directory}/authorized_keys", 0o644)
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation; a container may not have it
    with open(f"{directory}/sshd_config", "w") as f:
        f.write(f"ListenAddress 127.0.0.1:{port}\nHostKey {directory}/host_ed25519\nPidFile none\n"
                f"AuthorizedKeysFile {directory}/authorized_keys\nStrictModes no\nUsePAM no\n"
                + ("PermitRootLogin prohibit-password\n" if permit_root else "")
                + f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nAllowUsers {user}\nLogLevel VERBOSE\n")
    with open(f"{directory}/host_ed25519.pub") as f:
        host_key = " ".join(f.read().split()[:2])
    with open(f"{directory}/known_hosts", "w") as f:
        f.write(f"[127.0.0.1]:{port} {host_key}\n")
    # libvirt runs `command -p PORT -l USER -i KEYFILE -T -e none -- 127.0.0.1 sh -c '…'`.
    with open(f"{directory}/ssh", "w") as f:
        f.write("#!/bin/sh\nexec /usr/bin/ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=yes "
                f"-o UserKnownHostsFile={directory}/known_hosts -o GlobalKnownHostsFile=/dev/null -o LogLevel=ERROR \"$@\"\n")
    os.chmod(f"{directory}/ssh", 0o755)


def _processes():
    """(pid, ppid, uid, state, comm) of every process, from /proc."""
    entries = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        entries.append((int(name), int(fields[1]), uid, fields[0], comm))
    return entries


class SSHHost:
    """One SSH-reached libvirt session host (see the module's doc)."""

    def __init__(self, user, uid, gid, port, directory, sshd):
        self.user, self.uid, self.gid, self.port, self.directory = user, uid, gid, port, directory
        self.home = directory + "/home"
        self.sshd = sshd
        self._torn_down = False

    @property
    def uri(self):
        """The remote URI, as a daemon lists the host."""
        return (f"qemu+ssh://{self.user}@127.0.0.1:{self.port}/session"
                f"?keyfile={self.directory}/client_ed25519&command={self.directory}/ssh")

    @classmethod
    def start(cls):
        """Makes a user, its keys and an sshd on a free loopback port. Needs root and openssh-server."""
        if os.geteuid() != 0:
            raise RuntimeError("SSH hosts make users and run sshd: run as root")
        if not os.access("/usr/sbin/sshd", os.X_OK):
            raise RuntimeError("SSH hosts need Debian's openssh-server (make deps-test installs it)")
        tag = uuid.uuid4().hex[:8]
        user = f"vmshost-{tag}"
        # Short: libvirt's UNIX sockets live under the home, and a socket path has at most 107 bytes.
        directory = f"/tmp/vmsh-{tag}"
        home = directory + "/home"
        os.mkdir(directory)
        os.chmod(directory, 0o755)
        made, host = False, None
        try:
            # `-p '*'`: no password, but not locked ("!"), which sshd (without PAM) would refuse.
            _account("/usr/sbin/useradd", "--system", "--no-create-home", "--home-dir", home, "--shell", "/bin/sh", "-p", "*", user)
            made = True
            entry = pwd.getpwnam(user)
            os.mkdir(home)
            os.chown(home, entry.pw_uid, entry.pw_gid)
            port = _free_loopback_port()
            write_ssh_files(directory, port, user)
            _run("/usr/sbin/sshd", "-t", "-f", f"{directory}/sshd_config")
            log = open(f"{directory}/sshd.log", "ab")
            sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", f"{directory}/sshd_config"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            host = cls(user, entry.pw_uid, entry.pw_gid, port, directory, sshd)
            deadline = time.monotonic() + 5
            while not _can_connect(port):
                if sshd.poll() is not None or time.monotonic() > deadline:
                    host.tear_down()
                    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port}; see {directory}/sshd.log")
                time.sleep(0.025)
            return host
        except BaseException:
            if host is None:
                if made:
                    _account("/usr/sbin/userdel", user)
                shutil.rmtree(directory, ignore_errors=True)
            raise

    def virsh(self, *arguments, check=True):
        """virsh against this host, over its SSH transport."""
        result = subprocess.run(["virsh", "-q", "-c", self.uri, *arguments], capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"virsh {' '.join(arguments)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def define_pool(self):
        """The `vmsessiond` storage pool an admin defines on a session host: a directory in the user's home."""
        path = self.home + "/pool"
        self.virsh("pool-define-as", "vmsessiond", "dir", "--target", path)
        self.virsh("pool-build", "vmsessiond")
        self.virsh("pool-start", "vmsessiond")
        return path

    def domains(self):
        return [line.strip() for line in self.virsh("list", "--all", "--name").splitlines() if line.strip()]

    def volumes(self):
        return [line.split()[0] for line in self.virsh("vol-list", "vmsessiond").splitlines() if line.strip()]

    def processes(self):
        """The user's live processes (zombies left out), as (pid, comm)."""
        return [(pid, comm) for pid, _, uid, state, comm in _processes() if uid == self.uid and state != "Z"]

    def libvirtd_pid(self):
        """The user's session libvirtd, from its pid file, if it runs."""
        try:
            with open(self.home + "/.cache/libvirt/libvirtd.pid") as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if any(p == pid for p, _ in self.processes()) else None

    def session_processes(self):
        """The sshd processes serving connections (not the listener)."""
        table = _processes()
        found, parents = [], {self.sshd.pid}
        while True:
            more = [pid for pid, ppid, _, _, comm in table if ppid in parents and pid not in found and comm.startswith("sshd")]
            if not more:
                return found
            found += more
            parents = set(more)

    def tear_down(self):
        """Kills everything the host runs and the sshd, deletes the user and removes its files. Idempotent."""
        if self._torn_down:
            return
        self._torn_down = True
        for pid in self.session_processes():
            _signal(pid, signal.SIGCONT)
        _signal(self.sshd.pid, signal.SIGCONT)
        for _ in range(100):
            left = self.processes()
            if not left:
                break
            for pid, _ in left:
                _signal(pid, signal.SIGCONT)
                _signal(pid, signal.SIGKILL)
            time.sleep(0.05)
        for pid in self.session_processes():
            _signal(pid, signal.SIGKILL)
        if self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(5)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()
        try:
            _account("/usr/sbin/userdel", self.user)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.tear_down()


def _signal(pid, number):
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass
