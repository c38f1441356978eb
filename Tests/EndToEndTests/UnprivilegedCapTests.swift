import Foundation
import Testing
import VMSessionTestSupport

/// The execution cap without root: the real daemon run as a non-root user on the embedded QEMU driver
/// (which refuses CPU tuning to it), holding a busy appliance guest to its cap through a cgroup v1 `cpu`
/// directory delegated to that user, measured on the QEMU process's CPU time.
extension RealGuestSuites {
@Suite("Execution cap as a non-root user", .serialized)
struct UnprivilegedCapTests {
    static let busyUserData = #"#!/bin/sh\necho busy guest\nwhile :; do :; done\n"#

    /// Opens and starts a busy guest; returns its QEMU pid once the guest runs its loop.
    static func startBusyGuest(_ api: APIClient, id: String, token: String, state: String) async throws -> Int32 {
        let session = "/api/v1/sessions/\(id)"
        try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64}"#).status == 202)
            _ = try await log.state("open")
            let start = try await api.call(.POST, session + "/start", token: token, body: #"{"userData":"\#(busyUserData)"}"#)
            #expect(start.status == 202, "\(start.json)")
            _ = try await log.state("running")
        }
        try await RealVMTests.waitForConsole("\(state)/machines/\(id)/console.log", containing: "busy guest")
        return try #require(RealVMTests.qemuProcess(for: id), "a qemu process runs the session's VM")
    }

    /// Keeps the daemon's log for CI to look at, when asked to (VMSESSIOND_ARTIFACTS).
    static func keepLog(of daemon: DaemonProcess, as name: String) {
        guard let target = ProcessInfo.processInfo.environment["VMSESSIOND_ARTIFACTS"] else { return }
        try? FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try? daemon.log().write(toFile: target + "/\(name)-daemon.log", atomically: true, encoding: .utf8)
    }

    /// The shares of a core the process used over a few windows of `seconds`.
    static func shares(of pid: Int32, windows: Int = 3, seconds: Int = 3) async throws -> [Double] {
        var result: [Double] = []
        for _ in 0..<windows { result.append(try await RealVMTests.cpuShare(of: pid, over: .seconds(seconds))) }
        return result
    }

    @Test("as a non-root user on the embedded driver, a busy guest is held to 25 % and 50 % of a core (±2 points) in a per-VM cgroup that survives a daemon restart and goes on close")
    func cgroupCapAsNonRootUser() async throws {
        let user = try UnprivilegedUser.ensure()
        let directory = try TemporaryDirectory("vms-e2e-user-cap")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
        let cgroup = try TestCPUCgroup(owner: user)
        defer { cgroup.tearDown() }
        let appliance = try user.applianceDirectory(copyingInto: directory.path)
        let daemon = try user.daemon(
            in: directory.path, cgroup: cgroup.path, arguments: ["--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "5"])
        try await daemon.start()
        defer { Self.keepLog(of: daemon, as: "user-cap") }
        let api = APIClient(port: daemon.port)

        // It says how it runs: as a user, embedded libvirt, caps through the cgroup it was started in.
        let info = try await api.call(.GET, "/api/v1")
        let runtime = try #require(info["runtime"] as? [String: Any], "\(info.json)")
        #expect(runtime["mode"] as? String == "user")
        #expect(runtime["libvirt"] as? String == "embedded")
        #expect(runtime["capMechanism"] as? String == "cgroup-v1")
        #expect(runtime["capDetail"] as? String == cgroup.path)
        #expect((info["hypervisor"] as? [String: Any])?["supportsExecutionCap"] as? Bool == true)
        #expect(daemon.log().contains("running in user mode"))

        let (id, token) = try await api.newSession("user-cap")
        let session = "/api/v1/sessions/\(id)"
        let qemu = try await Self.startBusyGuest(api, id: id, token: token, state: daemon.stateDirectory)
        var owner = stat()
        #expect(stat("/proc/\(qemu)", &owner) == 0 && owner.st_uid == user.uid, "QEMU runs as the user, not root")
        let busy = try await RealVMTests.cpuShare(of: qemu, over: .seconds(2))
        print("uncapped busy guest: \(busy) of a core")

        for cap in [25, 50] {
            let reply = try await api.call(.PUT, session + "/execution-cap", token: token, body: #"{"cap":\#(cap)}"#)
            #expect(reply.status == 200, "\(reply.json)")
            let child = "vms-\(id)"
            #expect(cgroup.children == [child], "one cgroup for the VM")
            #expect(cgroup.members(child).contains(qemu), "QEMU was moved into it")
            try await Task.sleep(for: .milliseconds(500))
            let measured = try await Self.shares(of: qemu)
            print("cap \(cap) %: measured \(measured)")
            let target = Double(cap) / 100
            // CFS never lets the cgroup run over its quota; a window below it can only be the shared
            // machine starving the guest, so the best window is judged against the ±2 points.
            #expect(measured.allSatisfy { $0 <= target + 0.02 }, "never above \(cap) % + 2 points: \(measured)")
            let closest = measured.min { abs($0 - target) < abs($1 - target) } ?? 0
            #expect(abs(closest - target) <= 0.02, "\(cap) % ± 2 points: \(measured)")
            #expect(try await api.call(.GET, session, token: token)["appliedCap"] as? Int == cap, "the cap read back is the one set")
        }

        // A daemon restart leaves the running VM in its cgroup, at its cap, and the new daemon reads it back.
        try await daemon.stop()
        #expect(cgroup.members("vms-\(id)").contains(qemu), "QEMU stays in its cgroup while the daemon is away")
        try await daemon.start()
        let restarted = APIClient(port: daemon.port)
        let again = try await restarted.call(.GET, session, token: token)
        #expect(again["state"] as? String == "running")
        #expect(again["appliedCap"] as? Int == 50, "the cap survives the restart: \(again.json)")
        #expect(cgroup.children == ["vms-\(id)"])

        // 100 % lifts the limit.
        #expect(try await restarted.call(.PUT, session + "/execution-cap", token: token, body: #"{"cap":100}"#).status == 200)
        try await Task.sleep(for: .milliseconds(500))
        let lifted = try await RealVMTests.cpuShare(of: qemu, over: .seconds(3))
        #expect(lifted > 0.55, "above the 50 % it was held to: the limit is gone (\(lifted))")

        // Close: the VM and its cgroup are gone.
        try await restarted.withEvents(session: id, token: token) { log in
            #expect(try await restarted.call(.POST, session + "/close", token: token).status == 202)
            _ = try await log.state("closed")
        }
        #expect(cgroup.children.isEmpty, "the VM's cgroup is removed on close")
        try await daemon.stop()
        withExtendedLifetime(directory) {}
    }

    @Test("as a non-root user with no cgroup it may write, a cap on a running VM is 422 not_supported saying what to enable; a kept cap does not stop a start")
    func noMechanismAsNonRootUser() async throws {
        let user = try UnprivilegedUser.ensure()
        let directory = try TemporaryDirectory("vms-e2e-user-nocap")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
        let cgroup = try TestCPUCgroup(owner: nil)  // root's: the user may not make children in it
        defer { cgroup.tearDown() }
        let appliance = try user.applianceDirectory(copyingInto: directory.path)
        let daemon = try user.daemon(
            in: directory.path, cgroup: cgroup.path, arguments: ["--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "5"])
        try await daemon.start()
        defer { Self.keepLog(of: daemon, as: "user-nocap") }
        let api = APIClient(port: daemon.port)
        let info = try await api.call(.GET, "/api/v1")
        let runtime = try #require(info["runtime"] as? [String: Any], "\(info.json)")
        #expect(runtime["mode"] as? String == "user")
        #expect(runtime["capMechanism"] as? String == "none")
        #expect((runtime["capDetail"] as? String ?? "").contains(cgroup.path), "it names the cgroup it would need: \(runtime)")
        #expect((info["hypervisor"] as? [String: Any])?["supportsExecutionCap"] as? Bool == false)

        let (id, token) = try await api.newSession("user-nocap")
        let session = "/api/v1/sessions/\(id)"
        // A cap set while the VM is off is kept; without a mechanism the start still succeeds.
        #expect(try await api.call(.PUT, session + "/execution-cap", token: token, body: #"{"cap":50}"#).status == 200)
        _ = try await Self.startBusyGuest(api, id: id, token: token, state: daemon.stateDirectory)

        let refused = try await api.call(.PUT, session + "/execution-cap", token: token, body: #"{"cap":25}"#)
        #expect(refused.status == 422, "\(refused.json)")
        #expect(refused.errorCode == "not_supported")
        let message = (refused.json["error"] as? [String: Any])?["message"] as? String ?? ""
        #expect(message.contains("cgroupDir") && message.contains("chown"), "it says what to enable: \(message)")
        #expect(try await api.call(.GET, session, token: token)["executionCap"] as? Int == 50, "the refused cap changed nothing")
        #expect(cgroup.children.isEmpty)

        try await api.withEvents(session: id, token: token) { log in
            #expect(try await api.call(.POST, session + "/close", token: token).status == 202)
            _ = try await log.state("closed")
        }
        try await daemon.stop()
        withExtendedLifetime(directory) {}
    }
}
}
