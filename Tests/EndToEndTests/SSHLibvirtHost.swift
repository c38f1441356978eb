import Foundation
import Testing

/// A libvirt host reached over real SSH, made on this machine for tests of many hosts: an unprivileged user of
/// its own, Debian's `sshd` on a loopback port of its own (a host key and an authorized client key the fixture
/// makes), and that user's libvirt session daemon behind it, reached as
/// `qemu+ssh://USER@127.0.0.1:PORT/session?keyfile=…&command=…`.
///
/// What libvirt 9.0 does on the far side, found out for this fixture: the remote driver runs
/// `virt-ssh-helper` (shipped in `libvirt-daemon`, so no `nc` is needed) through the user's shell, and the
/// helper autostarts the user's monolithic `libvirtd --timeout=120` (Debian 12 ships no `virtqemud`) with its
/// sockets in `~/.cache/libvirt`; nothing needs systemd as PID 1. The host key is checked for real: `command`
/// is a wrapper around `ssh` with a known-hosts file of the fixture's own (`StrictHostKeyChecking=yes`), so
/// root's `~/.ssh` is neither read nor written and no `no_verify` is needed.
///
/// ``tearDown()`` (also at deinit) kills every process of the user (libvirtd, QEMU, the SSH session) and the
/// sshd, deletes the user and removes every file. Processes the user leaves as zombies are not counted as left
/// behind: libvirtd daemonizes, so its parent is PID 1, which in some containers never reaps.
final class SSHLibvirtHost: @unchecked Sendable {
    /// The user that is the host (its session libvirt runs as it).
    let user: String
    let uid: uid_t
    let gid: gid_t
    /// The sshd's loopback port.
    let port: Int
    /// The fixture's own files (root's): keys, sshd_config, known_hosts, the ssh wrapper, logs.
    let directory: String
    /// The user's home, where its libvirt keeps its state and where files "on the host" go.
    let home: String
    /// How long ``start()`` took: making the user, the keys and the sshd, until the port answers.
    private(set) var startDuration: Duration = .zero
    private let sshd: SpawnedChild
    private var tornDown = false

    /// The remote URI, as a daemon would list the host.
    var uri: String {
        "qemu+ssh://\(user)@127.0.0.1:\(port)/session?keyfile=\(directory)/client_ed25519&command=\(directory)/ssh"
    }

    /// Makes a user, its keys and an sshd on a free loopback port. Needs root and `openssh-server`.
    static func start() throws -> SSHLibvirtHost {
        try #require(geteuid() == 0, "SSH test hosts make users and run sshd: run these tests as root")
        try #require(
            FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd"),
            "SSH test hosts need Debian's openssh-server (make deps-test installs it)")
        let clock = ContinuousClock()
        let started = clock.now
        let tag = UUID().uuidString.prefix(8).lowercased()
        let user = "vmshost-\(tag)"
        // Short: libvirt's UNIX sockets live under the home, and a socket path has at most 107 bytes.
        let directory = "/tmp/vmsh-\(tag)"
        let home = directory + "/home"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory)
        var made = false
        do {
            // `-p '*'`: no password, but not "locked" ("!"), which sshd (without PAM) would refuse.
            try account("/usr/sbin/useradd", "--system", "--no-create-home", "--home-dir", home, "--shell", "/bin/sh", "-p", "*", user)
            made = true
            let entry = try #require(getpwnam(user), "useradd made \(user)")
            let (uid, gid) = (entry.pointee.pw_uid, entry.pointee.pw_gid)
            try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: false)
            try run("/bin/chown", "\(uid):\(gid)", home)
            let port = try freeLoopbackPort()
            try writeSSHFiles(in: directory, port: port, allowing: user)
            try run("/usr/sbin/sshd", "-t", "-f", directory + "/sshd_config")

            let sshd = try SpawnedChild(["/usr/sbin/sshd", "-D", "-e", "-f", directory + "/sshd_config"], log: directory + "/sshd.log")
            let host = SSHLibvirtHost(user: user, uid: uid, gid: gid, port: port, directory: directory, home: home, sshd: sshd)
            var listening = canConnect(port: port)
            for _ in 0..<200 where !listening {
                guard sshd.isRunning else {
                    host.tearDown()
                    throw DaemonError("sshd exited: \((try? String(contentsOfFile: directory + "/sshd.log", encoding: .utf8)) ?? "")")
                }
                usleep(25_000)
                listening = canConnect(port: port)
            }
            guard listening else {
                host.tearDown()
                throw DaemonError("sshd did not listen on 127.0.0.1:\(port) within 5 s")
            }
            host.startDuration = started.duration(to: clock.now)
            return host
        } catch {
            if made { _ = try? account("/usr/sbin/userdel", user) }
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    private init(user: String, uid: uid_t, gid: gid_t, port: Int, directory: String, home: String, sshd: SpawnedChild) {
        self.user = user
        self.uid = uid
        self.gid = gid
        self.port = port
        self.directory = directory
        self.home = home
        self.sshd = sshd
    }

    deinit { tearDown() }

    /// Copies `files` into `subdirectory` of the user's home, owned by the user: files that are "on the host".
    func place(_ files: [String], in subdirectory: String) throws -> String {
        let target = home + "/" + subdirectory
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        for file in files {
            try FileManager.default.copyItem(atPath: file, toPath: target + "/" + (file as NSString).lastPathComponent)
        }
        try Self.run("/bin/chown", "-R", "\(uid):\(gid)", target)
        return target
    }

    /// The sshd that listens (stopping it with SIGSTOP leaves TCP connections accepted by the kernel unanswered).
    var listenerPID: pid_t { sshd.pid }

    /// The user's live processes (zombies left out).
    func processes() -> [ProcessEntry] {
        ProcessEntry.all().filter { $0.uid == uid && $0.state != "Z" }
    }

    /// The pid of the user's session libvirtd, from its pid file, if it runs.
    var libvirtdPID: Int32? {
        guard let text = try? String(contentsOfFile: home + "/.cache/libvirt/libvirtd.pid", encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { return nil }
        return processes().contains { $0.pid == pid } ? pid : nil
    }

    /// The sshd processes serving connections (root's privileged monitor and the user's child), not the listener.
    func sessionProcesses() -> [ProcessEntry] {
        let table = ProcessEntry.all()
        var found: [ProcessEntry] = []
        var parents: Set<Int32> = [sshd.pid]
        while true {
            let next = table.filter { parents.contains($0.ppid) && !found.contains($0) && $0.command.hasPrefix("sshd") }
            if next.isEmpty { return found }
            found += next
            parents = Set(next.map(\.pid))
        }
    }

    /// Kills everything the host runs, the sshd, deletes the user and removes its files. Idempotent.
    func tearDown() {
        guard !tornDown else { return }
        tornDown = true
        for pid in sessionProcesses().map(\.pid) { kill(pid, SIGCONT) }
        for _ in 0..<100 {
            let left = processes()
            if left.isEmpty { break }
            for entry in left {
                kill(entry.pid, SIGCONT)
                kill(entry.pid, SIGKILL)
            }
            usleep(50_000)
        }
        for entry in sessionProcesses() { kill(entry.pid, SIGKILL) }
        sshd.stop()
        _ = try? Self.account("/usr/sbin/userdel", user)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Makes what a test host's own sshd and its client need in `directory`: a host key and a client key (the
    /// client's authorized), `sshd_config` (loopback `port`, key login for `user` only, `root` too when
    /// `permitRoot`), and `ssh`, a wrapper that checks the host key against a `known_hosts` of its own, so that
    /// root's `~/.ssh` is neither read nor written. Shared by ``SSHLibvirtHost`` and ``SystemSSHHost``.
    static func writeSSHFiles(in directory: String, port: Int, allowing user: String, permitRoot: Bool = false) throws {
        try run("/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "host", "-f", directory + "/host_ed25519")
        try run("/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "client", "-f", directory + "/client_ed25519")
        try FileManager.default.copyItem(atPath: directory + "/client_ed25519.pub", toPath: directory + "/authorized_keys")
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: directory + "/authorized_keys")
        // sshd's privilege separation directory; Debian makes it at boot (tmpfiles), a container may not have.
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        try """
            ListenAddress 127.0.0.1:\(port)
            HostKey \(directory)/host_ed25519
            PidFile none
            AuthorizedKeysFile \(directory)/authorized_keys
            StrictModes no
            UsePAM no
            \(permitRoot ? "PermitRootLogin prohibit-password\n" : "")PasswordAuthentication no
            KbdInteractiveAuthentication no
            AllowUsers \(user)
            LogLevel VERBOSE

            """.write(toFile: directory + "/sshd_config", atomically: true, encoding: .utf8)
        let hostKey = try String(contentsOfFile: directory + "/host_ed25519.pub", encoding: .utf8)
            .split(separator: " ").prefix(2).joined(separator: " ")
        try "[127.0.0.1]:\(port) \(hostKey)\n".write(toFile: directory + "/known_hosts", atomically: true, encoding: .utf8)
        // libvirt runs `command -p PORT -l USER -i KEYFILE -T -e none -- 127.0.0.1 sh -c '…'`.
        try """
            #!/bin/sh
            exec /usr/bin/ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=yes \
              -o UserKnownHostsFile=\(directory)/known_hosts -o GlobalKnownHostsFile=/dev/null -o LogLevel=ERROR "$@"

            """.write(toFile: directory + "/ssh", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory + "/ssh")
    }

    /// Whether something listens on the loopback port.
    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// A TCP port nobody listens on now (the kernel's pick for port 0).
    static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw DaemonError("cannot find a free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }

    /// useradd or userdel, tried again for a while when it fails: other tests make users at the same time, and
    /// the one holding /etc/passwd's lock makes the other fail at once.
    static func account(_ program: String, _ arguments: String...) throws {
        var last = ""
        for _ in 0..<30 {
            let (status, output) = try Command.run(program, arguments)
            if status == 0 { return }
            last = output
            usleep(100_000)
        }
        throw DaemonError("\(program) \(arguments.joined(separator: " ")) failed: \(last)")
    }

    @discardableResult
    static func run(_ program: String, _ arguments: String...) throws -> String {
        let (status, output) = try Command.run(program, arguments)
        guard status == 0 else { throw DaemonError("\(program) \(arguments.joined(separator: " ")) failed: \(output)") }
        return output
    }
}

/// A child process started with `posix_spawn` and reaped here. Not Foundation's `Process`: on Linux it waits for
/// a child with a blocking `waitpid` on its one monitoring queue as soon as the child closes the descriptors it
/// inherited, which sshd does at once; every other `Process` of the test run then waits forever for its exit.
final class SpawnedChild: @unchecked Sendable {
    let pid: pid_t
    private var exited = false

    /// Starts `arguments[0]` with `arguments`, stdin from /dev/null, stdout and stderr appended to `log`.
    init(_ arguments: [String], log: String) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, arguments[0], &actions, nil, argv, environ)
        guard result == 0 else { throw DaemonError("cannot start \(arguments[0]): \(String(cString: strerror(result)))") }
        self.pid = pid
    }

    /// Whether it still runs (reaps it if it ended).
    var isRunning: Bool {
        if exited { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { exited = true }
        return !exited
    }

    /// SIGTERM, then SIGKILL after 5 s; reaps it.
    func stop() {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        for _ in 0..<100 where isRunning { usleep(50_000) }
        if isRunning { kill(pid, SIGKILL) }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        exited = true
    }

    deinit { stop() }
}

/// One line of the process table, read from /proc.
struct ProcessEntry: Equatable, Sendable {
    let pid: Int32
    let ppid: Int32
    let uid: uid_t
    /// The state letter of /proc/PID/stat (`R`, `S`, `T` stopped, `Z` zombie, …).
    let state: String
    /// The command name (`comm`), e.g. `libvirtd`, `qemu-system-x86`, `sshd`.
    let command: String

    static func all() -> [ProcessEntry] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return names.compactMap { name in
            guard let pid = Int32(name) else { return nil }
            return entry(pid)
        }
    }

    static func entry(_ pid: Int32) -> ProcessEntry? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
        else { return nil }
        let command = String(stat[stat.index(after: open)..<close])
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 2, let ppid = Int32(fields[1]) else { return nil }
        let uidLine = status.split(separator: "\n").first { $0.hasPrefix("Uid:") }
        guard let uid = uidLine?.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first.flatMap({ uid_t($0) }) else { return nil }
        return ProcessEntry(pid: pid, ppid: ppid, uid: uid, state: String(fields[0]), command: command)
    }
}
