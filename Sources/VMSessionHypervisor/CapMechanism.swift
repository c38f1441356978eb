import Foundation
import Libvirt
import Synchronization
import VMSessionCore

/// How the daemon holds a running VM to its execution cap. Chosen once at start (``CapMechanismChoice``),
/// reported in the log and in `GET /api/v1`, and used by ``LibvirtHypervisor`` for every cap.
///
/// It is a seam because no single mechanism works everywhere: libvirt's scheduler parameters need a
/// privileged driver, a cgroup needs a delegated (v2) or `chown`ed (v1) controller, and where neither
/// exists the cap is refused with a message that says what to enable. Methods block (libvirt, files):
/// they run on the hypervisor's dispatch queue.
protocol CapMechanism: Sendable {
    var kind: CapMechanismKind { get }
    /// What exactly it uses (a cgroup directory), or why there is none.
    var detail: String { get }
    /// Applies `cap` to the running domain.
    func apply(_ cap: ExecutionCap, to domain: Domain) throws
    /// The cap in force on the running domain.
    func applied(to domain: Domain) throws -> ExecutionCap
    /// Forgets what it made for a VM whose process has ended (its cgroup). Best effort.
    func release(machine: String)
    /// At daemon start: keeps what belongs to the VMs still running, drops the rest.
    func reattach(running: [Domain])
}

/// The kinds of ``CapMechanism``, as `GET /api/v1` names them.
public enum CapMechanismKind: String, Codable, Sendable, CaseIterable {
    case libvirt
    case cgroupV2 = "cgroup-v2"
    case cgroupV1 = "cgroup-v1"
    case none
}

/// libvirt's own vCPU bandwidth (`vcpu_quota` per vCPU): what a privileged driver offers.
struct LibvirtSchedulerCap: CapMechanism {
    var kind: CapMechanismKind { .libvirt }
    var detail: String { "libvirt scheduler parameters (vcpu_period/vcpu_quota)" }

    func apply(_ cap: ExecutionCap, to domain: Domain) throws {
        try domain.setVCPUBandwidth(periodMicroseconds: ExecutionCap.periodMicroseconds, quotaMicroseconds: cap.quotaMicroseconds)
    }

    func applied(to domain: Domain) throws -> ExecutionCap {
        let bandwidth = try domain.vcpuBandwidth()
        return ExecutionCap.applied(quotaMicroseconds: bandwidth.quota, periodMicroseconds: bandwidth.period)
    }

    func release(machine: String) {}
    func reattach(running: [Domain]) {}
}

/// A cgroup per VM in the daemon's own (delegated or `chown`ed) cgroup, its QEMU process moved in and
/// limited there with CFS bandwidth: `vcpus` × cap of a core for the whole process.
struct CgroupCap: CapMechanism {
    let cgroup: CgroupCPU
    /// QEMU pids by machine, so that reading a cap (every `GET` of a session) does not scan /proc.
    private let pids = PIDCache()

    init(cgroup: CgroupCPU) { self.cgroup = cgroup }

    var kind: CapMechanismKind { cgroup.version == .v2 ? .cgroupV2 : .cgroupV1 }
    var detail: String { cgroup.base }

    func apply(_ cap: ExecutionCap, to domain: Domain) throws {
        let machine = domain.name
        let pid = try pids.pid(of: machine)
        if cap == .unlimited && cgroup.members(of: machine).isEmpty { return }  // never limited: nothing to undo
        try cgroup.apply(CPUBandwidth(cap: cap, vcpus: try domain.vcpuCount()), machine: machine, pid: pid)
    }

    func applied(to domain: Domain) throws -> ExecutionCap {
        let machine = domain.name
        guard let bandwidth = cgroup.bandwidth(machine: machine, pid: try pids.pid(of: machine)) else { return .unlimited }
        return bandwidth.cap(vcpus: try domain.vcpuCount())
    }

    func release(machine: String) {
        pids.forget(machine)
        // QEMU may take a moment to leave after libvirt reports it gone.
        for _ in 0..<20 {
            if cgroup.remove(machine: machine) { return }
            usleep(50_000)
        }
    }

    func reattach(running: [Domain]) {
        let names = Set(running.map(\.name))
        for domain in running where cgroup.machines().contains(domain.name) {
            // A VM that kept running keeps its cgroup and limit; a QEMU found outside it is moved back in.
            guard let pid = try? pids.pid(of: domain.name), !cgroup.members(of: domain.name).contains(pid),
                let cap = try? applied(to: domain)
            else { continue }
            try? apply(cap, to: domain)
        }
        for machine in cgroup.machines() where !names.contains(machine) { cgroup.remove(machine: machine) }
    }

}

/// Finds the pid of the QEMU process running a machine as this user (by its `-name guest=…` argument)
/// and remembers it while that process lives.
final class PIDCache: Sendable {
    private let known = Mutex<[String: Int32]>([:])

    func pid(of machine: String) throws(VMSessionError) -> Int32 {
        if let pid = known.withLock({ $0[machine] }), Self.runs(machine, pid: pid) { return pid }
        let uid = geteuid()
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry) else { continue }
            var info = stat()
            guard stat("/proc/\(entry)", &info) == 0, info.st_uid == uid, Self.runs(machine, pid: pid) else { continue }
            known.withLock { $0[machine] = pid }
            return pid
        }
        forget(machine)
        throw VMSessionError(.invalidState, "The VM \(machine) has no QEMU process of this user to cap.")
    }

    func forget(_ machine: String) {
        _ = known.withLock { $0.removeValue(forKey: machine) }
    }

    private static func runs(_ machine: String, pid: Int32) -> Bool {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        return data.split(separator: 0).contains { argument in
            let text = String(decoding: argument, as: UTF8.self)
            return text.hasPrefix("guest=\(machine),") || text == "guest=\(machine)"
        }
    }
}

/// No mechanism: every cap below 100 % is refused with `not_supported` and ``reason``.
struct UnavailableCap: CapMechanism {
    let reason: String

    var kind: CapMechanismKind { .none }
    var detail: String { reason }

    func apply(_ cap: ExecutionCap, to domain: Domain) throws {
        guard cap == .unlimited else { throw VMSessionError(.notSupported, reason) }
    }

    func applied(to domain: Domain) throws -> ExecutionCap { .unlimited }
    func release(machine: String) {}
    func reattach(running: [Domain]) {}
}

/// Picks the cap mechanism once, from what the driver and the host offer.
enum CapMechanismChoice {
    /// What the config may ask for (`capMechanism`).
    enum Preference: String, Sendable, CaseIterable {
        case auto, libvirt, cgroup, none
    }

    struct Host {
        var euid: uid_t = geteuid()
        var procSelfCgroup: String = (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? ""
        var mountInfo: String = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    }

    /// Whether libvirt will tune CPU for this URI: a privileged QEMU driver (root's, or qemu:///system).
    static func libvirtIsPrivileged(uri: String, euid: uid_t) -> Bool {
        uri.hasPrefix("qemu:///system") || (euid == 0 && (uri.hasPrefix("qemu:///embed") || uri.hasPrefix("qemu:///session")))
    }

    /// Whether QEMU runs on this machine as the daemon's own user (so it can move it into a cgroup).
    static func qemuIsOwnProcess(uri: String, euid: uid_t) -> Bool {
        uri.hasPrefix("qemu:///embed") || uri.hasPrefix("qemu:///session")
    }

    static func choose(
        driver: String, uri: String, preference: Preference, cgroupDirectory: String?, host: Host = Host()
    ) throws(VMSessionError) -> any CapMechanism {
        guard driver == "QEMU" else { return UnavailableCap(reason: "The \(driver) driver cannot cap a VM's CPU use.") }
        let privileged = libvirtIsPrivileged(uri: uri, euid: host.euid)
        switch preference {
        case .none:
            return UnavailableCap(reason: "The execution cap is turned off in the config (capMechanism \"none\").")
        case .libvirt:
            return LibvirtSchedulerCap()
        case .cgroup, .auto:
            if preference == .auto && privileged { return LibvirtSchedulerCap() }
            guard qemuIsOwnProcess(uri: uri, euid: host.euid) else {
                return UnavailableCap(reason: "Cannot cap CPU: \(uri) is not a privileged libvirt and its QEMU is not this user's process. "
                    + "Use qemu:///system (as a member of group libvirt) or the embedded driver.")
            }
            if let cgroup = try cgroup(configured: cgroupDirectory, host: host) { return CgroupCap(cgroup: cgroup) }
            return UnavailableCap(reason: missingCgroupAdvice(uri: uri, host: host))
        }
    }

    /// The cgroup to use: the configured one (which must be usable), else the daemon's own v2 cgroup if
    /// `cpu` is delegated to it, else its v1 `cpu` cgroup if writable. v2 is prepared (daemon leaf) here.
    static func cgroup(configured: String?, host: Host) throws(VMSessionError) -> CgroupCPU? {
        if let configured {
            guard let cgroup = CgroupCPU.usable(configured: configured) else {
                throw VMSessionError(
                    .invalidArgument,
                    "cgroupDir \(configured) is not a cgroup this user may write with the cpu controller "
                        + "(v1: cpu.cfs_quota_us and a writable directory; v2: cpu in cgroup.controllers and writable cgroup files).")
            }
            try cgroup.prepare()
            return cgroup
        }
        let own = CgroupCPU.own(procSelfCgroup: host.procSelfCgroup, mountInfo: host.mountInfo)
        if let v2 = own.v2.flatMap(CgroupCPU.usableV2) {
            try v2.prepare()
            return v2
        }
        return own.v1.flatMap(CgroupCPU.usableV1)
    }

    /// Exactly what to enable, for the host's cgroup layout.
    static func missingCgroupAdvice(uri: String, host: Host) -> String {
        let own = CgroupCPU.own(procSelfCgroup: host.procSelfCgroup, mountInfo: host.mountInfo)
        var advice = "Cannot cap CPU without root: libvirt (\(uri)) refuses CPU tuning to an unprivileged driver, and "
        if let v1 = own.v1 {
            advice += "this daemon's cgroup v1 cpu directory \(v1) is not writable by it. Give it one: as root, "
                + "mkdir \(v1)/vmsessiond-USER && chown USER \(v1)/vmsessiond-USER, and set cgroupDir to it "
                + "(or start the daemon in it)."
        } else if let v2 = own.v2 {
            advice += "the cpu controller is not delegated to its cgroup \(v2). Run it as the systemd user unit "
                + "(Delegate=cpu) or set cgroupDir to a delegated cgroup with cpu in cgroup.controllers."
        } else {
            advice += "no cgroup with the cpu controller is mounted."
        }
        return advice + " Or use qemu:///system as a member of group libvirt."
    }
}
