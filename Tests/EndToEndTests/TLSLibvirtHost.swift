import Foundation
import Testing

/// A libvirt host reached over TLS (`qemu+tls://`), made on this machine for the tests of many hosts: a libvirtd
/// that serves TLS on a loopback port of its own, with a certificate authority, a server certificate for 127.0.0.1
/// and a client certificate the fixture makes with `openssl`. The daemon reaches it as
/// `qemu+tls://127.0.0.1:PORT/{session|system}?pkipath=DIR`, DIR holding libvirt's client files (`cacert.pem`,
/// `clientcert.pem`, `clientkey.pem`). Two kinds:
///
/// - ``Kind/session``: an unprivileged user of its own runs its session `libvirtd --listen`;
/// - ``Kind/system``: root's system libvirtd, as an admin's pool host runs it, in a mount namespace of its own
///   (its `/etc/libvirt`, `/run/libvirt`, `/var/lib/libvirt`, `/var/cache/libvirt` and `/var/log/libvirt` are the
///   fixture's directories), so that it neither sees nor disturbs this machine's libvirt, with the `virtlogd` it sends
///   QEMU's output through; its QEMU runs as `libvirt-qemu`, and the daemon makes its pool at
///   `/var/lib/libvirt/images/vmsessiond` there.
///
/// Why it exists beside ``SSHLibvirtHost``: TLS is libvirt's other remote transport, and the one without SSH, so
/// the daemon has no tunnel to a host-local socket there (the display answers `not_supported`) while everything
/// that goes through libvirt's own protocol (volumes, the console stream, screenshots, save and restore) must
/// work as on any other host. The server checks the client's certificate (`tls_no_verify_certificate = 0`)
/// and admits only the fixture's distinguished name, as an admin's host would.
///
/// ``tearDown()`` (also at deinit) stops libvirtd, kills the QEMU it started, deletes the user (session kind) and
/// removes every file.
final class TLSLibvirtHost: @unchecked Sendable {
    enum Kind: String, Sendable {
        case session, system
    }

    let kind: Kind
    /// The user the host's QEMU runs as: the fixture's own (session) or `libvirt-qemu` (system).
    let user: String
    let uid: uid_t
    /// The TLS port libvirtd listens on.
    let port: Int
    /// The fixture's own files (root's): the CA, the client's PKI directory, logs, the system kind's libvirt
    /// directories.
    let directory: String
    /// The session kind's user's home, where its libvirt keeps its state; for the system kind, what the host
    /// sees as `/var/lib/libvirt`.
    let home: String
    /// The client's PKI directory (libvirt's `pkipath`).
    var pkiPath: String { directory + "/pki" }
    private let libvirtd: SpawnedChild
    /// The session kind's user, deleted at teardown.
    private let madeUser: String?
    private var tornDown = false

    /// The remote URI, as a daemon would list the host.
    var uri: String { "qemu+tls://127.0.0.1:\(port)/\(kind.rawValue)?pkipath=\(pkiPath)" }

    /// Makes the certificates and a TLS-listening libvirtd of `kind` on a free loopback port; `extraConfig` goes to
    /// the end of its libvirtd.conf. Needs root.
    static func start(_ kind: Kind = .session, extraConfig: String = "") throws -> TLSLibvirtHost {
        try #require(geteuid() == 0, "TLS test hosts make users and namespaces: run these tests as root")
        let tag = UUID().uuidString.prefix(8).lowercased()
        // Short: libvirt's UNIX sockets live under the home, and a socket path has at most 107 bytes.
        let directory = "/tmp/vmst-\(tag)"
        let home = directory + "/home"
        let server = directory + "/server"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory)
        var madeUser: String?
        do {
            let user: String, uid: uid_t, gid: gid_t
            switch kind {
            case .session:
                user = "vmstls-\(tag)"
                try SSHLibvirtHost.account("/usr/sbin/useradd", "--system", "--no-create-home", "--home-dir", home, "--shell", "/bin/sh", "-p", "*", user)
                madeUser = user
            case .system:
                user = "libvirt-qemu"
            }
            let entry = try #require(getpwnam(user), "\(user) exists (libvirt-daemon makes libvirt-qemu)")
            (uid, gid) = (entry.pointee.pw_uid, entry.pointee.pw_gid)
            for path in [home, server, directory + "/pki"] {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
            }
            try makeCertificates(in: directory)
            let port = try SSHLibvirtHost.freeLoopbackPort()
            var config = """
                listen_tls = 1
                listen_tcp = 0
                tls_port = "\(port)"
                listen_addr = "127.0.0.1"
                key_file = "\(server)/serverkey.pem"
                cert_file = "\(server)/servercert.pem"
                ca_file = "\(server)/cacert.pem"
                auth_tls = "none"
                tls_no_verify_certificate = 0
                tls_allowed_dn_list = ["CN=vmsessiond-test-client"]

                """
            let command: [String]
            // Decided once: the mount made here is the one `showKVM` removes below.
            let hideKVM = kind == .system && Self.hidesKVMWhileProbing
            switch kind {
            case .session:
                config += "unix_sock_dir = \"\(home)/.cache/libvirt\"\n"
                try SSHLibvirtHost.run("/bin/chown", "-R", "\(uid):\(gid)", home, server)
                // libvirtd as the user, in the foreground (so the fixture owns and reaps it), with the home libvirt's
                // session mode keeps its state in.
                command = [
                    "/usr/bin/setpriv", "--reuid=\(uid)", "--regid=\(gid)", "--init-groups", "/usr/bin/env", "-i", "HOME=\(home)",
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "/usr/sbin/libvirtd", "--listen", "-f", server + "/libvirtd.conf",
                ]
            case .system:
                // Root's libvirtd over the fixture's own copies of libvirt's system directories, in a mount namespace
                // that ends with it.
                var mounts: [String] = []
                // /etc/libvirt too: the system driver keeps its domains' and pools' definitions there.
                for (index, target) in ["/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt", "/etc/libvirt"].enumerated() {
                    let source = index == 1 ? home : directory + "/root\(index)"
                    if index != 1 { try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: false) }
                    try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
                    mounts.append("mount --bind \(source) \(target)")
                }
                // /dev/kvm hidden until libvirtd has probed QEMU (see `hidesKVMWhileProbing` and `showKVM`).
                if hideKVM {
                    FileManager.default.createFile(atPath: directory + "/no-kvm", contents: nil, attributes: [.posixPermissions: 0o600])
                    mounts.append("mount --bind \(directory)/no-kvm /dev/kvm")
                }
                command = [
                    "/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                    // virtlogd first: the system QEMU driver sends QEMU's output through it (systemd starts it by
                    // its socket on a real host).
                    mounts.joined(separator: " && ") + " && /usr/sbin/virtlogd -d -p \(server)/virtlogd.pid && exec /usr/sbin/libvirtd --listen -f \(server)/libvirtd.conf",
                ]
            }
            try (config + extraConfig).write(toFile: server + "/libvirtd.conf", atomically: true, encoding: .utf8)
            try SSHLibvirtHost.run("/bin/chmod", "0600", server + "/serverkey.pem")
            let libvirtd = try SpawnedChild(command, log: directory + "/libvirtd.log")
            let host = TLSLibvirtHost(
                kind: kind, user: user, uid: uid, port: port, directory: directory, home: home, libvirtd: libvirtd, madeUser: madeUser)
            var listening = SSHLibvirtHost.canConnect(port: port)
            for _ in 0..<400 where !listening {
                guard libvirtd.isRunning else {
                    host.tearDown()
                    throw DaemonError("libvirtd exited: \((try? String(contentsOfFile: directory + "/libvirtd.log", encoding: .utf8)) ?? "")")
                }
                usleep(25_000)
                listening = SSHLibvirtHost.canConnect(port: port)
            }
            guard listening else {
                host.tearDown()
                throw DaemonError("libvirtd did not listen on 127.0.0.1:\(port) within 10 s")
            }
            if hideKVM {
                do { try host.showKVM() } catch {
                    host.tearDown()
                    throw error
                }
            }
            return host
        } catch {
            if let madeUser { _ = try? SSHLibvirtHost.account("/usr/sbin/userdel", madeUser) }
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// Whether the system kind hides this machine's /dev/kvm from libvirtd while it probes QEMU.
    ///
    /// Why: here /dev/kvm is root's alone (0600), yet libvirtd's capability probe, whose QEMU runs as libvirt-qemu,
    /// finds KVM; its check of the cached capabilities then asks whether libvirt-qemu may open /dev/kvm, which it may
    /// not, so every lookup judged the cache outdated and probed both QEMU binaries again (4 s each time): an open or
    /// a start on the host took 70 to 80 s, and each test on a system host over 3 minutes. Probed with a plain file
    /// in place of /dev/kvm, the capabilities say TCG only, which is what the check finds afterwards, so they stay
    /// cached. (A real host's /dev/kvm is its kvm group's, which libvirt-qemu is in: probe and check agree there.) The
    /// file is unmounted once the probe is done, because libvirt's namespace for QEMU cannot carry a file mounted
    /// under /dev; the guests run under TCG either way.
    static var hidesKVMWhileProbing: Bool {
        var info = stat()
        return stat("/dev/kvm", &info) == 0 && info.st_mode & 0o077 == 0
    }

    /// Has libvirtd probe every QEMU binary now (`virsh capabilities` on its socket, in its namespace), then unmounts
    /// the file over /dev/kvm there.
    private func showKVM() throws {
        let namespace = "--mount=/proc/\(libvirtd.pid)/ns/mnt"
        _ = try SSHLibvirtHost.run("/usr/bin/nsenter", namespace, "--", "/usr/bin/virsh", "-q", "-c", "qemu:///system", "capabilities")
        _ = try SSHLibvirtHost.run("/usr/bin/nsenter", namespace, "--", "/bin/umount", "/dev/kvm")
    }

    /// A CA; a server certificate for 127.0.0.1 (libvirt checks the address it dialled against the certificate);
    /// a client certificate whose DN the server admits; and, for the refusal test, `other-pki`: a client signed
    /// by a CA the server does not trust.
    private static func makeCertificates(in directory: String) throws {
        func openssl(_ arguments: String...) throws {
            let (status, output) = try Command.run("/usr/bin/openssl", arguments)
            guard status == 0 else { throw DaemonError("openssl \(arguments.joined(separator: " ")) failed: \(output)") }
        }
        func signed(_ name: String, subject: String, extensions: String, key: String, cert: String, ca: String) throws {
            try openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", "\(directory)/\(name).csr", "-subj", subject)
            try extensions.write(toFile: "\(directory)/\(name).ext", atomically: true, encoding: .utf8)
            try openssl(
                "x509", "-req", "-in", "\(directory)/\(name).csr", "-CA", "\(ca).pem", "-CAkey", "\(ca).key", "-CAcreateserial",
                "-out", cert, "-days", "2", "-extfile", "\(directory)/\(name).ext")
        }
        for ca in ["ca", "other-ca"] {
            try openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(directory)/\(ca).key", "-out", "\(directory)/\(ca).pem",
                "-days", "2", "-subj", "/CN=vmsessiond test \(ca)")
        }
        try signed(
            "server", subject: "/CN=127.0.0.1",
            extensions: "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
            key: "\(directory)/server/serverkey.pem", cert: "\(directory)/server/servercert.pem", ca: "\(directory)/ca")
        try FileManager.default.copyItem(atPath: "\(directory)/ca.pem", toPath: "\(directory)/server/cacert.pem")
        let client = "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
        try signed(
            "client", subject: "/CN=vmsessiond-test-client", extensions: client,
            key: "\(directory)/pki/clientkey.pem", cert: "\(directory)/pki/clientcert.pem", ca: "\(directory)/ca")
        try FileManager.default.copyItem(atPath: "\(directory)/ca.pem", toPath: "\(directory)/pki/cacert.pem")
        try FileManager.default.createDirectory(atPath: "\(directory)/other-pki", withIntermediateDirectories: false)
        try signed(
            "other", subject: "/CN=vmsessiond-test-client", extensions: client,
            key: "\(directory)/other-pki/clientkey.pem", cert: "\(directory)/other-pki/clientcert.pem", ca: "\(directory)/other-ca")
        try FileManager.default.copyItem(atPath: "\(directory)/ca.pem", toPath: "\(directory)/other-pki/cacert.pem")
    }

    private init(
        kind: Kind, user: String, uid: uid_t, port: Int, directory: String, home: String, libvirtd: SpawnedChild, madeUser: String?
    ) {
        self.kind = kind
        self.user = user
        self.uid = uid
        self.port = port
        self.directory = directory
        self.home = home
        self.libvirtd = libvirtd
        self.madeUser = madeUser
    }

    deinit { tearDown() }

    /// The same host with a client certificate from a CA the server does not trust.
    var untrustedClientURI: String { "qemu+tls://127.0.0.1:\(port)/\(kind.rawValue)?pkipath=\(directory)/other-pki" }

    /// The host's live processes (zombies left out), libvirtd aside: the session kind's user's; for the system kind,
    /// those in its libvirtd's mount namespace (virtlogd, SSH sessions) and `libvirt-qemu`'s whose mounts are this
    /// host's (its QEMU, which libvirt starts in a mount namespace of the VM's own, made from libvirtd's, so its mount
    /// table names the fixture's directories): another system host's QEMU, of a test running beside, is not this one's.
    func processes() -> [ProcessEntry] {
        let live = ProcessEntry.all().filter { $0.pid != libvirtd.pid && $0.state != "Z" }
        switch kind {
        case .session:
            return live.filter { $0.uid == uid }
        case .system:
            let namespace = mountNamespace
            return live.filter {
                (namespace != nil && Self.mountNamespace(of: $0.pid) == namespace) || ($0.uid == uid && Self.mounts(of: $0.pid).contains(directory))
            }
        }
    }

    private static func mounts(of pid: Int32) -> String {
        (try? String(contentsOfFile: "/proc/\(pid)/mountinfo", encoding: .utf8)) ?? ""
    }

    /// libvirtd's pid: for the system kind, a process in the host's mount namespace (``SystemSSHHost`` serves SSH
    /// there).
    var libvirtdPID: pid_t { libvirtd.pid }

    /// libvirtd's mount namespace, read while it runs and kept for teardown.
    private lazy var mountNamespace: String? = Self.mountNamespace(of: libvirtd.pid)

    private static func mountNamespace(of pid: Int32) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/mnt")
    }

    /// Kills everything the host runs, deletes the user and removes its files. Idempotent.
    func tearDown() {
        guard !tornDown else { return }
        tornDown = true
        _ = mountNamespace  // before libvirtd goes: its QEMU is found by the namespace they share
        libvirtd.stop()
        for _ in 0..<100 {
            let left = processes()
            if left.isEmpty { break }
            for entry in left { kill(entry.pid, SIGKILL) }
            usleep(50_000)
        }
        if let madeUser { _ = try? SSHLibvirtHost.account("/usr/sbin/userdel", madeUser) }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
