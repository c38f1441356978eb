import Foundation
import VMSessionCore

/// A cgroup directory with the CPU controller that the daemon may write, and the per-VM children it makes
/// in it: `<base>/vms-<session>/` holding one QEMU process and its CFS bandwidth limit.
///
/// It exists so that an unprivileged daemon can cap a VM: libvirt refuses CPU tuning to a session-mode or
/// unprivileged embedded driver, but the kernel lets a user limit processes it owns inside a cgroup subtree
/// delegated to it (systemd's `Delegate=` for cgroup v2, a `chown`ed directory for cgroup v1).
/// Every method does blocking file I/O: call it off the cooperative pool.
struct CgroupCPU: Sendable, Equatable {
    enum Version: String, Sendable {
        case v1 = "cgroup-v1"
        case v2 = "cgroup-v2"
    }

    let version: Version
    /// The directory holding the per-VM children (for v2, also the daemon's own `daemon/` leaf).
    let base: String

    // MARK: Finding the daemon's cgroup

    /// Where the daemon's own cgroups are, read from `/proc/self/cgroup` and `/proc/self/mountinfo`:
    /// the cgroup v2 directory (if a v2 hierarchy is mounted) and the v1 `cpu` directory (if there is one).
    static func own(procSelfCgroup: String, mountInfo: String) -> (v2: String?, v1: String?) {
        var v2Path: String?
        var v1Path: String?
        for line in procSelfCgroup.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            if fields[0] == "0" && fields[1].isEmpty { v2Path = String(fields[2]) }
            if fields[1].split(separator: ",").contains("cpu") { v1Path = String(fields[2]) }
        }
        var v2Mount: (root: String, point: String)?
        var v1Mount: (root: String, point: String)?
        for line in mountInfo.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2 else { continue }
            let before = halves[0].split(separator: " ")
            let after = halves[1].split(separator: " ")
            guard before.count >= 5, after.count >= 3 else { continue }
            let mount = (root: String(before[3]), point: String(before[4]))
            if after[0] == "cgroup2", v2Mount == nil { v2Mount = mount }
            if after[0] == "cgroup", after[2].split(separator: ",").contains("cpu") { v1Mount = mount }
        }
        return (join(v2Mount, v2Path), join(v1Mount, v1Path))
    }

    private static func join(_ mount: (root: String, point: String)?, _ path: String?) -> String? {
        guard let mount, var path else { return nil }
        // In a cgroup namespace or a bind mount the mount's root may be a subdirectory of the hierarchy.
        if mount.root != "/" {
            guard path.hasPrefix(mount.root) else { return nil }
            path = String(path.dropFirst(mount.root.count))
        }
        let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
        return mount.point + trimmed
    }

    /// A usable cgroup v2 directory: `cpu` is available in it and the daemon may write it (a delegated
    /// subtree). A daemon restarted in its own `daemon/` leaf uses the parent.
    static func usableV2(_ directory: String) -> CgroupCPU? {
        var base = directory
        if (base as NSString).lastPathComponent == daemonLeaf { base = (base as NSString).deletingLastPathComponent }
        guard let controllers = try? String(contentsOfFile: base + "/cgroup.controllers", encoding: .utf8),
            controllers.split(whereSeparator: \.isWhitespace).contains("cpu"),
            access(base, W_OK) == 0, access(base + "/cgroup.subtree_control", W_OK) == 0, access(base + "/cgroup.procs", W_OK) == 0
        else { return nil }
        return CgroupCPU(version: .v2, base: base)
    }

    /// A usable cgroup v1 `cpu` directory: it has CFS bandwidth files and the daemon may make children in it.
    static func usableV1(_ directory: String) -> CgroupCPU? {
        guard FileManager.default.fileExists(atPath: directory + "/cpu.cfs_quota_us"), access(directory, W_OK) == 0 else { return nil }
        return CgroupCPU(version: .v1, base: directory)
    }

    /// A directory named in the config: v2 if it has `cgroup.controllers`, else v1.
    static func usable(configured directory: String) -> CgroupCPU? {
        FileManager.default.fileExists(atPath: directory + "/cgroup.controllers") ? usableV2(directory) : usableV1(directory)
    }

    // MARK: Preparing and using it

    static let daemonLeaf = "daemon"
    static let childPrefix = "vms-"

    /// cgroup v2 keeps processes in leaves only ("no internal processes"): the daemon moves itself into
    /// `<base>/daemon/` before it enables the `cpu` controller for the children. Nothing to do for v1.
    func prepare(pid: Int32 = getpid()) throws(VMSessionError) {
        guard version == .v2 else { return }
        let leaf = base + "/" + Self.daemonLeaf
        try makeDirectory(leaf)
        try write("\(pid)", to: leaf + "/cgroup.procs", "move the daemon into its own leaf cgroup")
        let enabled = (try? String(contentsOfFile: base + "/cgroup.subtree_control", encoding: .utf8)) ?? ""
        if !enabled.split(whereSeparator: \.isWhitespace).contains("cpu") {
            try write("+cpu", to: base + "/cgroup.subtree_control", "enable the cpu controller for the VMs' cgroups")
        }
    }

    func directory(for machine: String) -> String { base + "/" + machine }

    /// Holds process `pid` (the VM's QEMU) to `bandwidth`: sets the limit on the VM's child, then moves the
    /// process in (all of its threads).
    func apply(_ bandwidth: CPUBandwidth, machine: String, pid: Int32) throws(VMSessionError) {
        let child = directory(for: machine)
        try makeDirectory(child)
        switch version {
        case .v2:
            try write(bandwidth.cpuMax, to: child + "/cpu.max", "set the VM's CPU limit")
        case .v1:
            // The period first: a quota is checked against the period in force.
            try write("\(bandwidth.periodMicroseconds)", to: child + "/cpu.cfs_period_us", "set the VM's CPU period")
            try write("\(bandwidth.cfsQuota)", to: child + "/cpu.cfs_quota_us", "set the VM's CPU quota")
        }
        if !members(of: machine).contains(pid) {
            try write("\(pid)", to: child + "/cgroup.procs", "move the VM's QEMU process (\(pid)) into its cgroup")
        }
    }

    /// The limit on process `pid` through the VM's child, or nil if the process is not in it.
    func bandwidth(machine: String, pid: Int32) -> CPUBandwidth? {
        guard members(of: machine).contains(pid) else { return nil }
        let child = directory(for: machine)
        switch version {
        case .v2:
            return (try? String(contentsOfFile: child + "/cpu.max", encoding: .utf8)).flatMap { CPUBandwidth(cpuMax: $0) }
        case .v1:
            guard let quota = Self.number(child + "/cpu.cfs_quota_us").flatMap({ Int64($0) }),
                let period = Self.number(child + "/cpu.cfs_period_us").flatMap({ UInt64($0) })
            else { return nil }
            return CPUBandwidth(cfsQuota: quota, cfsPeriod: period)
        }
    }

    /// The processes in the VM's child (empty if it does not exist).
    func members(of machine: String) -> [Int32] {
        let text = (try? String(contentsOfFile: directory(for: machine) + "/cgroup.procs", encoding: .utf8)) ?? ""
        return text.split(whereSeparator: \.isWhitespace).compactMap { Int32($0) }
    }

    /// The VM children that exist.
    func machines() -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []
        return entries.filter { $0.hasPrefix(Self.childPrefix) }.sorted()
    }

    /// Removes the VM's child once no process is left in it; false if one still is (or rmdir failed).
    @discardableResult
    func remove(machine: String) -> Bool {
        let child = directory(for: machine)
        guard FileManager.default.fileExists(atPath: child) else { return true }
        guard members(of: machine).isEmpty else { return false }
        return rmdir(child) == 0
    }

    // MARK: Plumbing

    private static func number(_ path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func makeDirectory(_ path: String) throws(VMSessionError) {
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
            throw VMSessionError(.hypervisorError, "Cannot create the cgroup \(path): \(String(cString: strerror(errno))).")
        }
    }

    private func write(_ text: String, to path: String, _ what: String) throws(VMSessionError) {
        // One write(2) of the whole value: cgroup files take a value per write, and must not be truncated
        // and rewritten as a regular file would be (O_TRUNC is harmless on cgroupfs, needed on a test tree).
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw VMSessionError(.hypervisorError, "Cannot \(what): cannot open \(path): \(String(cString: strerror(errno))).")
        }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count else {
            throw VMSessionError(.hypervisorError, "Cannot \(what): writing '\(text)' to \(path) failed: \(String(cString: strerror(errno))).")
        }
    }
}
