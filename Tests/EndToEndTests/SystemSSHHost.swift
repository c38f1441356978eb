import Foundation
import Testing

/// Root's system libvirt reached over real SSH as root (`qemu+ssh://root@127.0.0.1:PORT/system`), the way an admin's
/// pool host is most often listed: a ``TLSLibvirtHost`` of kind `system` (root's libvirtd and virtlogd in a mount
/// namespace over the fixture's own `/etc/libvirt`, `/run/libvirt`, `/var/lib/libvirt`, … ; its QEMU runs as
/// `libvirt-qemu`), and Debian's `sshd` on a loopback port of its own, started in that same mount namespace, that
/// admits root with a key the fixture makes (`PermitRootLogin prohibit-password`).
///
/// Why sshd in libvirtd's mount namespace rather than `?socket=` in the URI: on a real host the SSH session and
/// libvirtd see the same `/run/libvirt` and `/etc/libvirt`, so libvirt's `virt-ssh-helper` finds the system socket at
/// its usual place with no parameter (it ignores `socket=`), and whatever the daemon runs over SSH sees the host's
/// libvirt files as libvirtd does. Everything else (`/tmp`, `/root`, the network) is this machine's, as for QEMU.
///
/// With `unprivilegedUser`, the SSH user is instead a user of the fixture's own in a group of its own that may use
/// libvirtd's read-write socket (`unix_sock_group`, `auth_unix_rw = "none"`: what Debian's `libvirt` group gets
/// through polkit), as an admin lists a host with a non-root SSH user; it is in no group of QEMU's.
///
/// ``tearDown()`` (also at deinit) stops the sshd and then the libvirt host (which kills every process left in its
/// mount namespace: the SSH sessions, QEMU), deletes the user and its group and removes every file.
final class SystemSSHHost: @unchecked Sendable {
    let libvirt: TLSLibvirtHost
    let port: Int
    /// The SSH side's files (keys, sshd_config, known_hosts, the ssh wrapper), inside the libvirt host's directory.
    let directory: String
    /// The SSH user: `root`, or the fixture's own user (also the name of its group).
    let user: String
    private let sshd: SpawnedChild
    private var tornDown = false

    var uri: String { "qemu+ssh://\(user)@127.0.0.1:\(port)/system?keyfile=\(directory)/client_ed25519&command=\(directory)/ssh" }

    /// Starts root's system libvirtd and an sshd beside it for root, or for a user of its own that may use libvirt's
    /// socket (`unprivilegedUser`). Needs root and `openssh-server`.
    static func start(unprivilegedUser: Bool = false) throws -> SystemSSHHost {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd"), "needs Debian's openssh-server (make deps-test)")
        var user = "root"
        var extraConfig = ""
        if unprivilegedUser {
            user = "vmsys-\(UUID().uuidString.prefix(8).lowercased())"
            try SSHLibvirtHost.account("/usr/sbin/groupadd", "--system", user)
            do {
                try SSHLibvirtHost.account(
                    "/usr/sbin/useradd", "--system", "--no-create-home", "--home-dir", "/tmp", "--shell", "/bin/sh", "-p", "*", "-g", user, user)
            } catch {
                _ = try? SSHLibvirtHost.account("/usr/sbin/groupdel", user)
                throw error
            }
            extraConfig = "unix_sock_group = \"\(user)\"\nunix_sock_rw_perms = \"0770\"\nauth_unix_rw = \"none\"\n"
        }
        let libvirt: TLSLibvirtHost
        do {
            libvirt = try TLSLibvirtHost.start(.system, extraConfig: extraConfig)
        } catch {
            Self.removeAccount(user)
            throw error
        }
        do {
            let directory = libvirt.directory + "/ssh"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
            let port = try SSHLibvirtHost.freeLoopbackPort()
            try SSHLibvirtHost.writeSSHFiles(in: directory, port: port, allowing: user, permitRoot: true)
            try SSHLibvirtHost.run("/usr/sbin/sshd", "-t", "-f", directory + "/sshd_config")
            // nsenter execs sshd in its own process (a mount namespace needs no fork), so the fixture owns and reaps it.
            let sshd = try SpawnedChild(
                ["/usr/bin/nsenter", "--mount=/proc/\(libvirt.libvirtdPID)/ns/mnt", "--", "/usr/sbin/sshd", "-D", "-e", "-f", directory + "/sshd_config"],
                log: directory + "/sshd.log")
            let host = SystemSSHHost(libvirt: libvirt, port: port, directory: directory, user: user, sshd: sshd)
            var listening = SSHLibvirtHost.canConnect(port: port)
            for _ in 0..<200 where !listening {
                guard sshd.isRunning else {
                    host.tearDown()
                    throw DaemonError("sshd exited: \((try? String(contentsOfFile: directory + "/sshd.log", encoding: .utf8)) ?? "")")
                }
                usleep(25_000)
                listening = SSHLibvirtHost.canConnect(port: port)
            }
            guard listening else {
                host.tearDown()
                throw DaemonError("sshd did not listen on 127.0.0.1:\(port) within 5 s")
            }
            return host
        } catch {
            libvirt.tearDown()
            Self.removeAccount(user)
            throw error
        }
    }

    private init(libvirt: TLSLibvirtHost, port: Int, directory: String, user: String, sshd: SpawnedChild) {
        self.libvirt = libvirt
        self.port = port
        self.directory = directory
        self.user = user
        self.sshd = sshd
    }

    /// Deletes the fixture's user and its group (not root).
    private static func removeAccount(_ user: String) {
        guard user != "root" else { return }
        _ = try? SSHLibvirtHost.account("/usr/sbin/userdel", user)
        _ = try? SSHLibvirtHost.account("/usr/sbin/groupdel", user)
    }

    deinit { tearDown() }

    /// Stops the sshd, then the libvirt host (its namespace's processes, its files). Idempotent.
    func tearDown() {
        guard !tornDown else { return }
        tornDown = true
        sshd.stop()
        libvirt.tearDown()
        Self.removeAccount(user)
    }
}
