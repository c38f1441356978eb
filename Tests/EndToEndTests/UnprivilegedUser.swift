import Foundation
import Testing

/// A real non-root user for end-to-end tests (`vmsessiontest`, a system user made if missing), and the real
/// daemon binary run as that user with `setpriv`, as the systemd user unit would run it for a desktop user.
/// Creating the user and giving it a cgroup needs root, which the test runner has here.
///
/// Reusable by any suite that must prove something works without root (caps, idle detection).
struct UnprivilegedUser: Sendable {
    static let name = "vmsessiontest"
    let uid: uid_t
    let gid: gid_t

    /// The test user, made with `useradd --system` if it does not exist yet.
    static func ensure() throws -> UnprivilegedUser {
        try #require(geteuid() == 0, "the unprivileged-user tests make a system user and a cgroup for it: run them as root")
        if getpwnam(name) == nil {
            try run("/usr/sbin/useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name)
        }
        let entry = try #require(getpwnam(name), "useradd made \(name)")
        return UnprivilegedUser(uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
    }

    /// Whether the user can read (and for a directory, enter) `path`.
    func canRead(_ path: String) -> Bool {
        (try? Self.run("/usr/sbin/runuser", "-u", Self.name, "--", "test", "-r", path, "-a", "-x", path)) != nil
            || (try? Self.run("/usr/sbin/runuser", "-u", Self.name, "--", "test", "-r", path, "-a", "-f", path)) != nil
    }

    /// Gives `path` (and everything under it) to the user.
    func own(_ path: String) throws {
        try Self.run("/bin/chown", "-R", "\(uid):\(gid)", path)
    }

    /// The daemon binary as the user can run it: the built one if the user can read it and its resource
    /// bundles, else a copy of them in `directory` (a build tree under root's home is not readable by others).
    func daemonBinary(copyingInto directory: String) throws -> String {
        let binary = DaemonProcess.binary
        let folder = (binary as NSString).deletingLastPathComponent
        let bundles = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".resources") }
        if canRead(binary) && bundles.allSatisfy({ canRead(folder + "/" + $0) }) { return binary }
        let target = directory + "/bin"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        for item in [(binary as NSString).lastPathComponent] + bundles {
            try FileManager.default.copyItem(atPath: folder + "/" + item, toPath: target + "/" + item)
        }
        try Self.run("/bin/chmod", "-R", "a+rX", target)
        return target + "/" + (binary as NSString).lastPathComponent
    }

    /// The test appliance as the user can read it: the built one, or a copy in `directory`.
    func applianceDirectory(copyingInto directory: String) throws -> String {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "build the appliance first (make appliance): \(appliance)")
        if canRead(appliance + "/vmlinuz") && canRead(appliance + "/initrd.img") { return appliance }
        let target = directory + "/appliance"
        try FileManager.default.copyItem(atPath: appliance, toPath: target)
        try Self.run("/bin/chmod", "-R", "a+rX", target)
        return target
    }

    /// The real daemon, run as this user in cgroup v1 `cpu` directory `cgroup` (the daemon starts there and
    /// takes it as its own, as it takes the systemd unit's delegated cgroup), with a state directory the
    /// user owns in `directory`. The caller starts and stops it.
    func daemon(in directory: String, cgroup: String, arguments: [String]) throws -> DaemonProcess {
        let state = directory + "/state"
        // A home of its own: libvirt's unprivileged driver keeps a cache in ~/.cache/libvirt.
        let home = directory + "/home"
        for owned in [state, home] {
            try FileManager.default.createDirectory(atPath: owned, withIntermediateDirectories: true)
            try own(owned)
        }
        try Self.run("/bin/chmod", "a+rx", directory)
        let binary = try daemonBinary(copyingInto: directory)
        // bash -c SCRIPT CGROUP HOME BINARY ARGS…: enter the cgroup as root, then become the user and exec.
        let script = #"echo $$ > "$0/cgroup.procs" && exec setpriv --reuid=\#(uid) --regid=\#(gid) --clear-groups "#
            + #"env -u XDG_RUNTIME_DIR -u XDG_CONFIG_HOME -u XDG_STATE_HOME HOME="$1" "${@:2}""#
        return DaemonProcess(
            stateDirectory: state, arguments: arguments, launcher: ["/bin/bash", "-c", script, cgroup, home], binary: binary)
    }

    @discardableResult
    static func run(_ program: String, _ arguments: String...) throws -> String {
        let (status, output) = try Command.run(program, arguments)
        guard status == 0 else { throw DaemonError("\(program) \(arguments.joined(separator: " ")) failed: \(output)") }
        return output
    }
}

/// A cgroup v1 `cpu` directory of a test's own under /sys/fs/cgroup/cpu, given to `owner` (as an admin
/// would delegate one to a user) or left root's. ``tearDown()`` (also at deinit) kills every process left
/// in it or its children (QEMU of a failed test) and removes them all.
final class TestCPUCgroup: @unchecked Sendable {
    static let hierarchy = "/sys/fs/cgroup/cpu"
    let path: String

    init(owner: UnprivilegedUser?) throws {
        try #require(
            FileManager.default.fileExists(atPath: Self.hierarchy + "/cpu.cfs_quota_us"),
            "these tests need a cgroup v1 cpu hierarchy at \(Self.hierarchy) (cgroup v2 is covered against a fake tree in CgroupCPUTests)")
        path = Self.hierarchy + "/vmsessiond-test-\(UUID().uuidString.prefix(8).lowercased())"
        guard mkdir(path, 0o755) == 0 else { throw DaemonError("cannot make \(path): \(String(cString: strerror(errno)))") }
        if let owner {
            // What a v1 delegation is: the directory (to make children) and its process lists (to enter it).
            for item in [path, path + "/cgroup.procs", path + "/tasks"] {
                guard chown(item, owner.uid, owner.gid) == 0 else { throw DaemonError("cannot chown \(item)") }
            }
        }
    }

    /// The per-VM children the daemon made.
    var children: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasPrefix("vms-") }.sorted()
    }

    func members(_ child: String? = nil) -> [Int32] {
        let file = (child.map { path + "/" + $0 } ?? path) + "/cgroup.procs"
        return ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
    }

    func tearDown() {
        guard FileManager.default.fileExists(atPath: path) else { return }
        for _ in 0..<50 {
            let left = children.flatMap { members($0) } + members()
            if left.isEmpty { break }
            for pid in left { kill(pid, SIGKILL) }
            usleep(100_000)
        }
        for child in children { rmdir(path + "/" + child) }
        rmdir(path)
    }

    deinit { tearDown() }
}
