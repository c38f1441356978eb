import Foundation
import Testing
import VMSessionCore
@testable import VMSessionHypervisor
import VMSessionTestSupport

/// The cgroup file logic against fake cgroup trees in a temporary directory: cgroup v2 is not mounted with
/// the cpu controller on these machines (they are v1), so this is where v2 is covered; v1 is also tested
/// for real as a non-root user in EndToEndTests.UnprivilegedCapTests.
@Suite("Cgroup CPU limits on fake cgroup trees")
struct CgroupCPUTests {
    /// A temporary directory standing in for a cgroup, removed at the end.
    final class FakeTree {
        let directory: TemporaryDirectory
        var path: String { directory.path }
        init(_ files: [String: String]) throws {
            directory = try TemporaryDirectory("vms-cg")
            for (name, text) in files { try text.write(toFile: directory.path + "/" + name, atomically: false, encoding: .utf8) }
        }
        func read(_ name: String) -> String? { try? String(contentsOfFile: path + "/" + name, encoding: .utf8) }
    }

    static func v2Tree(controllers: String = "cpuset cpu io memory pids") throws -> FakeTree {
        try FakeTree(["cgroup.controllers": controllers + "\n", "cgroup.subtree_control": "", "cgroup.procs": "", "cpu.max": "max 100000\n"])
    }

    static func v1Tree() throws -> FakeTree {
        try FakeTree(["cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n", "cgroup.procs": "", "tasks": ""])
    }

    // MARK: Finding the daemon's cgroup

    @Test("on a v1 host (hybrid, like these machines) the cpu directory and the unified one are found")
    func findsV1AndUnified() {
        let cgroup = "12:cpu,cpuacct:/vmsessiond-alice\n1:name=systemd:/user.slice\n0::/user.slice\n"
        let mounts = """
            30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
            36 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
            37 25 0:32 / /sys/fs/cgroup/memory rw,nosuid shared:17 - cgroup cgroup rw,memory
            """
        let own = CgroupCPU.own(procSelfCgroup: cgroup, mountInfo: mounts)
        #expect(own.v1 == "/sys/fs/cgroup/cpu,cpuacct/vmsessiond-alice")
        #expect(own.v2 == "/sys/fs/cgroup/unified/user.slice")
    }

    @Test("on a v2 host the systemd user unit's cgroup is found")
    func findsV2UserUnit() {
        let unit = "/user.slice/user-1000.slice/user@1000.service/app.slice/vmsessiond.service"
        let own = CgroupCPU.own(
            procSelfCgroup: "0::\(unit)\n",
            mountInfo: "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot")
        #expect(own.v2 == "/sys/fs/cgroup" + unit)
        #expect(own.v1 == nil)
    }

    @Test("inside a cgroup namespace or bind mount, the path is taken relative to the mount's root; outside it, not at all")
    func mountRoot() {
        let mounts = "40 30 0:31 /docker/abc /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu"
        #expect(CgroupCPU.own(procSelfCgroup: "3:cpu:/docker/abc/inner\n", mountInfo: mounts).v1 == "/sys/fs/cgroup/cpu/inner")
        #expect(CgroupCPU.own(procSelfCgroup: "3:cpu:/elsewhere\n", mountInfo: mounts).v1 == nil)
    }

    // MARK: cgroup v2

    @Test("v2: usable only with cpu in cgroup.controllers; a daemon restarted in its daemon/ leaf uses the parent")
    func v2Usable() throws {
        let tree = try Self.v2Tree()
        #expect(CgroupCPU.usableV2(tree.path) == CgroupCPU(version: .v2, base: tree.path))
        try FileManager.default.createDirectory(atPath: tree.path + "/daemon", withIntermediateDirectories: false)
        #expect(CgroupCPU.usableV2(tree.path + "/daemon")?.base == tree.path)
        let withoutCPU = try Self.v2Tree(controllers: "memory pids")
        #expect(CgroupCPU.usableV2(withoutCPU.path) == nil)
    }

    @Test("v2: the daemon moves itself into daemon/ before it enables +cpu for the VMs' children")
    func v2Prepare() throws {
        let tree = try Self.v2Tree()
        try CgroupCPU(version: .v2, base: tree.path).prepare(pid: 4242)
        #expect(tree.read("daemon/cgroup.procs") == "4242")
        #expect(tree.read("cgroup.subtree_control") == "+cpu")
    }

    @Test("v2: a VM's child gets cpu.max and the QEMU pid; the limit reads back only for a member; removed once empty")
    func v2Child() throws {
        let tree = try Self.v2Tree()
        let cgroup = CgroupCPU(version: .v2, base: tree.path)
        let bandwidth = CPUBandwidth(cap: try ExecutionCap(percent: 25), vcpus: 2)
        try cgroup.apply(bandwidth, machine: "vms-a", pid: 777)
        #expect(tree.read("vms-a/cpu.max") == "50000 100000")
        #expect(tree.read("vms-a/cgroup.procs") == "777")
        #expect(cgroup.machines() == ["vms-a"])
        #expect(cgroup.bandwidth(machine: "vms-a", pid: 777) == bandwidth)
        #expect(cgroup.bandwidth(machine: "vms-a", pid: 778) == nil, "a process outside the child is not limited by it")
        try cgroup.apply(CPUBandwidth(cap: .unlimited, vcpus: 2), machine: "vms-a", pid: 777)
        #expect(tree.read("vms-a/cpu.max") == "max 100000")
        #expect(!cgroup.remove(machine: "vms-a"), "not removed while QEMU is in it")
        // On cgroupfs the interface files vanish with the directory; here the test empties it as the kernel would.
        for file in ["cgroup.procs", "cpu.max"] { try FileManager.default.removeItem(atPath: tree.path + "/vms-a/" + file) }
        #expect(cgroup.remove(machine: "vms-a"))
        #expect(cgroup.machines().isEmpty)
        #expect(cgroup.remove(machine: "vms-a"), "removing what is gone succeeds")
    }

    // MARK: cgroup v1

    @Test("v1: a VM's child gets cfs_period_us and cfs_quota_us and the QEMU pid; 100 % writes -1")
    func v1Child() throws {
        let tree = try Self.v1Tree()
        let cgroup = try #require(CgroupCPU.usableV1(tree.path))
        try cgroup.prepare(pid: 1)
        #expect(!FileManager.default.fileExists(atPath: tree.path + "/daemon"), "v1 needs no daemon leaf")
        try cgroup.apply(CPUBandwidth(cap: try ExecutionCap(percent: 10), vcpus: 1), machine: "vms-b", pid: 555)
        #expect(tree.read("vms-b/cpu.cfs_period_us") == "100000")
        #expect(tree.read("vms-b/cpu.cfs_quota_us") == "10000")
        #expect(tree.read("vms-b/cgroup.procs") == "555")
        #expect(cgroup.bandwidth(machine: "vms-b", pid: 555)?.cap(vcpus: 1) == (try ExecutionCap(percent: 10)))
        try cgroup.apply(CPUBandwidth(cap: .unlimited, vcpus: 1), machine: "vms-b", pid: 555)
        #expect(tree.read("vms-b/cpu.cfs_quota_us") == "-1")
        #expect(cgroup.bandwidth(machine: "vms-b", pid: 555)?.cap(vcpus: 1) == .unlimited)
    }

    @Test("a directory without CFS bandwidth files is not a usable v1 cpu cgroup")
    func v1NeedsCFS() throws {
        let tree = try FakeTree(["cgroup.procs": ""])
        #expect(CgroupCPU.usableV1(tree.path) == nil)
        #expect(CgroupCPU.usable(configured: tree.path) == nil)
    }

    // MARK: Choosing the mechanism

    static func host(euid: uid_t, v1: String? = nil) -> CapMechanismChoice.Host {
        guard let v1 else { return .init(euid: euid, procSelfCgroup: "0::/\n", mountInfo: "") }
        return .init(euid: euid, procSelfCgroup: "4:cpu:/\n", mountInfo: "36 25 0:31 / \(v1) rw - cgroup cgroup rw,cpu")
    }

    @Test("root's embedded driver and qemu:///system use libvirt's tuning; a user's embedded driver uses its cgroup")
    func choice() throws {
        let embed = "qemu:///embed?root=/x"
        #expect(try CapMechanismChoice.choose(driver: "QEMU", uri: embed, preference: .auto, cgroupDirectory: nil, host: Self.host(euid: 0)).kind == .libvirt)
        #expect(
            try CapMechanismChoice.choose(driver: "QEMU", uri: "qemu:///system", preference: .auto, cgroupDirectory: nil, host: Self.host(euid: 1000)).kind
                == .libvirt)
        let tree = try Self.v1Tree()
        let chosen = try CapMechanismChoice.choose(
            driver: "QEMU", uri: embed, preference: .auto, cgroupDirectory: nil, host: Self.host(euid: 1000, v1: tree.path))
        #expect(chosen.kind == .cgroupV1)
        #expect(chosen.detail == tree.path)
        let configured = try Self.v2Tree()
        let v2 = try CapMechanismChoice.choose(
            driver: "QEMU", uri: "qemu:///session", preference: .auto, cgroupDirectory: configured.path, host: Self.host(euid: 1000))
        #expect(v2.kind == .cgroupV2)
        #expect(configured.read("daemon/cgroup.procs") == "\(getpid())", "the v2 cgroup was prepared")
    }

    @Test("without a mechanism the reason says what to enable; the test driver and a remote user libvirt have none")
    func noMechanism() throws {
        let embed = "qemu:///embed?root=/x"
        let none = try CapMechanismChoice.choose(
            driver: "QEMU", uri: embed, preference: .auto, cgroupDirectory: nil, host: Self.host(euid: 1000, v1: "/nonexistent/cpu"))
        #expect(none.kind == .none)
        #expect(none.detail.contains("/nonexistent/cpu") && none.detail.contains("chown") && none.detail.contains("cgroupDir"), "\(none.detail)")
        let v2Advice = try CapMechanismChoice.choose(driver: "QEMU", uri: embed, preference: .auto, cgroupDirectory: nil, host: Self.host(euid: 1000))
        #expect(v2Advice.kind == .none)
        #expect(try CapMechanismChoice.choose(driver: "TEST", uri: "test:///default", preference: .auto, cgroupDirectory: nil).kind == .none)
        let remote = try CapMechanismChoice.choose(
            driver: "QEMU", uri: "qemu+ssh://host/session", preference: .auto, cgroupDirectory: nil, host: Self.host(euid: 1000))
        #expect(remote.kind == .none)
        #expect(remote.detail.contains("qemu:///system"))
        #expect(try CapMechanismChoice.choose(driver: "QEMU", uri: embed, preference: .none, cgroupDirectory: nil, host: Self.host(euid: 0)).kind == .none)
    }

    @Test("GET /api/v1 names the libvirt kind from the URI", arguments: [
        ("qemu:///embed?root=/var/lib/vmsessiond/libvirt", "embedded"), ("qemu:///session", "session"), ("qemu:///system", "system"),
        ("test:///default", "test"), ("qemu+ssh://host/system", "remote"),
    ])
    func libvirtKind(uri: String, kind: String) {
        #expect(DaemonMode.libvirtKind(of: uri) == kind)
    }

    @Test("a configured cgroupDir that cannot be used stops the daemon with a message instead of being ignored")
    func badConfiguredDirectory() throws {
        let tree = try FakeTree([:])
        #expect(throws: VMSessionError.self) {
            try CapMechanismChoice.choose(
                driver: "QEMU", uri: "qemu:///embed?root=/x", preference: .cgroup, cgroupDirectory: tree.path, host: Self.host(euid: 1000))
        }
    }
}
