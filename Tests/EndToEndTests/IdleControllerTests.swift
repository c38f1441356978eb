import Foundation
import Testing
import VMSessionTestSupport

/// The idle-aware controller on real parts: Xvfb for the desktop, xdotool for input, the real daemon
/// pointed at that display, and a busy appliance guest under TCG whose cap is read back from libvirt.
extension RealGuestSuites {
@Suite("Idle-aware controller on a real X server and a real guest", .serialized)
struct IdleControllerTests {
    /// A daemon on its own desktop (Xvfb, or sway headless), with a running busy guest; everything torn
    /// down by `stop()` and deinit.
    struct Fixture: @unchecked Sendable {
        let display: any TestDesktop
        let directory: TemporaryDirectory
        let daemon: DaemonProcess
        let api: APIClient
        let id: String
        let token: String
        var session: String { "/api/v1/sessions/\(id)" }

        static func start(_ name: String, on display: any TestDesktop) async throws -> Fixture {
            let appliance = DaemonProcess.applianceDirectory
            try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "build the appliance first (make appliance)")
            let directory = try TemporaryDirectory("vms-e2e-idle")
            let daemon = DaemonProcess(
                stateDirectory: directory.path + "/state",
                arguments: ["--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "5", "--idle-time", "2"]
                    + display.daemonArguments)
            try await daemon.start()
            let api = APIClient(port: daemon.port)
            // The source is read on the controller's first round, just after the daemon listens.
            let status = try await api.waitForDetection(display.detection)
            #expect(status["idleTime"] as? Int == 2)
            let (id, token) = try await api.newSession(name)
            let fixture = Fixture(display: display, directory: directory, daemon: daemon, api: api, id: id, token: token)
            try await api.withEvents(session: id, token: token, since: 0) { log in
                #expect(try await api.call(.POST, fixture.session + "/open", token: token, body: #"{"memory":256,"disk":64}"#).status == 202)
                _ = try await log.state("open")
                let userData = #"#!/bin/sh\necho busy guest\nwhile :; do :; done\n"#
                #expect(try await api.call(.POST, fixture.session + "/start", token: token, body: #"{"userData":"\#(userData)"}"#).status == 202)
                _ = try await log.state("running")
            }
            return fixture
        }

        func patch(_ body: String) async throws {
            let reply = try await api.call(.PATCH, session + "/daemon", token: token, body: body)
            #expect(reply.status == 200, "\(reply.json)")
        }

        /// Keeps the desktop active (input every 0.5 s) while `body` runs; `body` starts once the daemon
        /// says the desktop is active.
        func whileActive<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
            try await withThrowingTaskGroup { group in
                group.addTask {
                    while !Task.isCancelled {
                        do { try display.input() } catch { Issue.record("input failed: \(error)") }
                        try await Task.sleep(for: .milliseconds(500))
                    }
                    return nil as T?
                }
                let deadline = ContinuousClock.now + .seconds(20)
                while try await api.call(.GET, "/api/v1/daemon")["isSystemIdle"] as? Bool != false {
                    guard ContinuousClock.now < deadline else {
                        throw DaemonError("the desktop never became active on input; daemon log:\n\(daemon.log().suffix(3000))")
                    }
                    try await Task.sleep(for: .milliseconds(50))
                }
                let result = try await body()
                group.cancelAll()
                return result
            }
        }

        /// Polls the session until `appliedCap` (read back from libvirt) is `cap`.
        func waitForAppliedCap(_ cap: Int, timeout: Duration = .seconds(20)) async throws {
            let deadline = ContinuousClock.now + timeout
            var last: Any?
            while ContinuousClock.now < deadline {
                last = try await api.call(.GET, session, token: token)["appliedCap"]
                if last as? Int == cap { return }
                try await Task.sleep(for: .milliseconds(100))
            }
            throw DaemonError("libvirt's cap never became \(cap) (last: \(String(describing: last)))")
        }

        /// Runs `body` on a fresh fixture and tears everything down, also when `body` fails (a guest
        /// left running would skew every later CPU measurement).
        static func with(
            _ name: String, on makeDesktop: () async throws -> any TestDesktop = { try await VirtualDisplay() },
            _ body: (Fixture) async throws -> Void
        ) async throws {
            let display = try await makeDesktop()
            let fixture: Fixture
            do { fixture = try await start(name, on: display) } catch {
                display.stop()
                throw error
            }
            do {
                try await body(fixture)
            } catch {
                if let qemu = RealVMTests.qemuProcess(for: fixture.id) { kill(qemu, SIGKILL) }
                try? await fixture.daemon.stop()
                fixture.display.stop()
                throw error
            }
            try await fixture.stop()
        }

        func stop() async throws {
            _ = try await api.call(.POST, session + "/close", token: token)
            for _ in 0..<200 {
                if try await api.call(.GET, session, token: token)["state"] as? String == "closed" { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            try await daemon.stop()
            display.stop()
        }
    }

    @Test("minCap 25 / maxCap 100: idleness raises libvirt's cap to 100, input drops it to 25, both on the event stream (X11)")
    func capFollowsIdleness() async throws {
        try await Self.capFollowsIdleness(on: { try await VirtualDisplay() })
    }

    @Test("minCap 25 / maxCap 100 on Wayland: sway headless as a non-root user, org_kde_kwin_idle, input by swaymsg")
    func capFollowsIdlenessOnWayland() async throws {
        try await Self.capFollowsIdleness(on: { try await WaylandCompositor() })
    }

    static func capFollowsIdleness(on desktop: () async throws -> any TestDesktop) async throws {
        try await Fixture.with("idle-cap", on: desktop) { f in
        try await f.api.withEvents(session: f.id, token: f.token) { log in
            try await f.whileActive {
                try await f.patch(#"{"controlled":true,"minCap":25,"maxCap":100}"#)
                try await f.waitForAppliedCap(25)
                let capped = try await log.next("executionCapChanged") { $0["cap"] as? Int == 25 }
                #expect(capped.payload["reason"] as? String == "controller")
                // The controller owns the cap now: a user's cap is refused.
                #expect(try await f.api.call(.PUT, f.session + "/execution-cap", token: f.token, body: #"{"cap":50}"#).errorCode == "invalid_state")
            }
            // No input for idleTime (2 s): idle, and the cap goes to maxCap.
            let idle = try await log.next("idleChanged", timeout: .seconds(20)) { $0["idle"] as? Bool == true }
            try await f.waitForAppliedCap(100)
            let raised = try await log.next("executionCapChanged", after: 0) { $0["cap"] as? Int == 100 }
            #expect(raised.id > idle.id, "idleChanged comes before the controller's cap")
            #expect(raised.payload["reason"] as? String == "controller")
            #expect(try await f.api.call(.GET, "/api/v1/daemon")["isSystemIdle"] as? Bool == true)

            // Input: active again at once, cap back to 25.
            let count = await log.count
            try f.display.input()
            _ = try await log.next("idleChanged", after: count, timeout: .seconds(10)) { $0["idle"] as? Bool == false }
            _ = try await log.next("executionCapChanged", after: count, timeout: .seconds(10)) { $0["cap"] as? Int == 25 }
            try await f.waitForAppliedCap(25)
            let qemu = try #require(RealVMTests.qemuProcess(for: f.id))
            let share = try await f.whileActive { try await RealVMTests.cpuShare(of: qemu, over: .seconds(3)) }
            #expect(share > 0.1 && share < 0.45, "the busy guest is held near 25 % of a core (\(share))")
        }
        }
    }

    @Test("minCap 0: the VM is paused on input and resumed when the desktop is idle")
    func pauseOnInput() async throws {
        try await Fixture.with("idle-pause") { f in
        try await f.api.withEvents(session: f.id, token: f.token) { log in
            try await f.whileActive {
                try await f.patch(#"{"controlled":true,"minCap":0}"#)
                _ = try await log.state("paused", timeout: .seconds(20))
            }
            _ = try await log.next("stateChanged", timeout: .seconds(20)) { $0["state"] as? String == "running" && $0["previous"] as? String == "paused" }
            #expect(try await f.api.call(.GET, f.session, token: f.token)["state"] as? String == "running")
            let count = await log.count
            try f.display.input()
            _ = try await log.next("stateChanged", after: count, timeout: .seconds(10)) { $0["state"] as? String == "paused" }
        }
        }
    }

    @Test("minCap 0 with DF_SUSPEND: the VM is hibernated on input and restored when the desktop is idle")
    func hibernateOnInput() async throws {
        try await Fixture.with("idle-suspend") { f in
        try await f.api.withEvents(session: f.id, token: f.token) { log in
            try await f.whileActive {
                try await f.patch(#"{"controlled":true,"minCap":0,"flags":1}"#)
                _ = try await log.state("saved", timeout: .seconds(60))
                #expect(RealVMTests.qemuProcess(for: f.id) == nil, "a hibernated VM has no qemu process")
            }
            let count = await log.count
            _ = try await log.next("stateChanged", after: count, timeout: .seconds(60)) { $0["state"] as? String == "running" }
            #expect(RealVMTests.qemuProcess(for: f.id) != nil, "restored: a qemu process runs it again")
        }
        }
    }
}
}
