import Foundation
import Testing
import VMSessionTestSupport

extension APIClient {
    /// Polls `GET /api/v1/daemon` until `idleDetection` is `detection`; returns that status.
    @discardableResult
    func waitForDetection(_ detection: String, timeout: Duration = .seconds(10)) async throws -> Reply {
        let deadline = ContinuousClock.now + timeout
        var last: Reply?
        while ContinuousClock.now < deadline {
            let status = try await call(.GET, "/api/v1/daemon")
            if status["idleDetection"] as? String == detection { return status }
            last = status
            try await Task.sleep(for: .milliseconds(20))
        }
        throw DaemonError("idleDetection never became \(detection); last: \(last?.json ?? [:])")
    }

    /// Polls until `isSystemIdle` is `idle`.
    func waitForIdle(_ idle: Bool, timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await call(.GET, "/api/v1/daemon")["isSystemIdle"] as? Bool == idle { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw DaemonError("isSystemIdle never became \(idle)")
    }
}

/// Which idle source the real daemon uses, and that it follows desktops that come and go: Xvfb and sway
/// (headless, as a non-root user) started after the daemon, stopped and started again. The test driver
/// stands in for the hypervisor (the controller's pause/resume works there; caps need a real guest, see
/// ``IdleControllerTests``).
@Suite("Idle sources on real desktops (test driver)", .serialized)
struct IdleSourceTests {
    static func daemon(
        _ directory: TemporaryDirectory, _ arguments: [String], environment: [String: String] = [:], user: String? = nil
    ) async throws -> DaemonProcess {
        let appliance = try directory.standInAppliance()
        let daemon = DaemonProcess(
            stateDirectory: directory.path + "/state",
            arguments: ["--libvirt-uri", "test:///default", "--appliance-dir", appliance, "--idle-time", "1"] + arguments,
            environment: environment, user: user)
        try await daemon.start()
        return daemon
    }

    @Test("an X server that comes up after the daemon started is picked up within a second, and again after it restarts")
    func lateXServer() async throws {
        let directory = try TemporaryDirectory("vms-e2e-late-x")
        // A range of its own: the number is free for seconds before Xvfb takes it, and suites running
        // at the same time pick theirs from 99..<199.
        let number = try VirtualDisplay.freeNumber(in: 200..<300)
        // Only DISPLAY names a session (a WAYLAND_DISPLAY from the machine running the tests is cleared).
        let daemon = try await Self.daemon(directory, ["--display", ":\(number)"], environment: ["WAYLAND_DISPLAY": ""])
        let api = APIClient(port: daemon.port)
        let before = try await api.waitForDetection("unavailable")
        let source = try #require(before["idleSource"] as? [String: Any])
        #expect(source["kind"] as? String == "xscreensaver", "auto: DISPLAY is the only session variable")
        #expect((source["reason"] as? String ?? "").contains("DISPLAY=:\(number)"))

        let display = try await VirtualDisplay(number: number)
        let up = ContinuousClock.now
        // Retried every 0.5 s, so picked up within a second on a quiet machine; how long it took is printed,
        // not asserted (a full `make test` runs TCG guests beside it on two cores; speed is for `make bench`).
        let found = try await api.waitForDetection("xscreensaver", timeout: .seconds(20))
        print("late X server picked up after \(up.duration(to: .now))")
        #expect(found["display"] as? String == ":\(number)")

        // The X server goes away and comes back: unavailable, then picked up again.
        display.stop()
        try await api.waitForDetection("unavailable")
        let again = try await VirtualDisplay(number: number)
        try await api.waitForDetection("xscreensaver", timeout: .seconds(20))
        // Real input on the new server reaches the daemon.
        try await api.waitForIdle(true)
        try again.moveMouse()
        try await api.waitForIdle(false)
        again.stop()
        try await daemon.stop()
    }

    @Test("X11 through XSync's IDLETIME alarms: the source says so, the desktop is idle after idleTime, active right after xdotool's input, and idle again")
    func xsyncAlarms() async throws {
        let directory = try TemporaryDirectory("vms-e2e-xsync")
        let display = try await VirtualDisplay()
        defer { display.stop() }
        let daemon = try await Self.daemon(directory, ["--idle-source", "xscreensaver", "--display", display.name])
        let api = APIClient(port: daemon.port)
        let status = try await api.waitForDetection("xscreensaver")
        let name = try #require((status["idleSource"] as? [String: Any])?["name"] as? String)
        #expect(name == "xsync IDLETIME \(display.name)", "Xvfb has SYNC and its IDLETIME counter: \(name)")
        #expect(status["display"] as? String == display.name)
        for _ in 0..<2 {
            try await api.waitForIdle(true)
            try display.moveMouse()
            // The server's alarm on input wakes the daemon; nothing polls in between. Within 5 s, not timed.
            try await api.waitForIdle(false, timeout: .seconds(5))
        }
        try await daemon.stop()
    }

    @Test("x11Idle: poll, as on a server without XSync (Xvfb cannot disable SYNC): XScreenSaver is polled, says why, and follows real input")
    func xscreensaverFallback() async throws {
        let directory = try TemporaryDirectory("vms-e2e-xss-poll")
        let display = try await VirtualDisplay()
        defer { display.stop() }
        let daemon = try await Self.daemon(directory, ["--idle-source", "xscreensaver", "--display", display.name, "--x11-idle", "poll"])
        let api = APIClient(port: daemon.port)
        let status = try await api.waitForDetection("xscreensaver")
        let name = try #require((status["idleSource"] as? [String: Any])?["name"] as? String)
        #expect(name.hasPrefix("xscreensaver \(display.name)") && name.contains("x11Idle: poll"), "\(name)")
        try await api.waitForIdle(true)
        try display.moveMouse()
        try await api.waitForIdle(false, timeout: .seconds(5))
        try await api.waitForIdle(true)
        try await daemon.stop()
    }

    @Test("sway as a non-root user, started after the daemon: org_kde_kwin_idle is used, its input makes the desktop active, idleness comes back after idleTime")
    func waylandCompositor() async throws {
        let directory = try TemporaryDirectory("vms-e2e-wayland")
        let runtime = try TemporaryDirectory("vms-e2e-xdg")
        let socket = runtime.path + "/wayland-1"
        // auto, from the environment the daemon is given: WAYLAND_DISPLAY (as a path) and a session type.
        let daemon = try await Self.daemon(directory, ["--wayland-display", socket, "--idle-source", "auto"])
        let api = APIClient(port: daemon.port)
        let waiting = try await api.waitForDetection("unavailable")
        #expect(((waiting["idleSource"] as? [String: Any])?["reason"] as? String ?? "").contains("waiting"))

        let sway = try await WaylandCompositor(runtimeDirectory: runtime)
        let status = try await api.waitForDetection("wayland", timeout: .seconds(5))
        let source = try #require(status["idleSource"] as? [String: Any])
        #expect((source["name"] as? String ?? "").contains("org_kde_kwin_idle"), "sway 1.7 offers only org_kde_kwin_idle: \(source)")
        #expect((source["reason"] as? String ?? "").contains("WAYLAND_DISPLAY"))

        // No input: idle after idleTime (1 s). Real input: active at once (the compositor's 'resumed').
        try await api.waitForIdle(true)
        try sway.input()
        try await api.waitForIdle(false, timeout: .seconds(5))
        try await api.waitForIdle(true)

        // The compositor goes away and a new one takes its place: detection follows.
        sway.stop()
        try await api.waitForDetection("unavailable")
        let second = try await WaylandCompositor(runtimeDirectory: runtime)
        try await api.waitForDetection("wayland", timeout: .seconds(5))
        try await api.waitForIdle(true)
        try second.input()
        try await api.waitForIdle(false, timeout: .seconds(5))
        second.stop()
        try await daemon.stop()
    }

    @Test("minCap 0 on Wayland: sway's input pauses the controlled VM, idleness resumes it")
    func waylandPausesOnInput() async throws {
        let directory = try TemporaryDirectory("vms-e2e-wayland-pause")
        let sway = try await WaylandCompositor()
        let daemon = try await Self.daemon(directory, sway.daemonArguments)
        let api = APIClient(port: daemon.port)
        try await api.waitForDetection("wayland")
        let (id, token) = try await api.newSession("wl-pause")
        let session = "/api/v1/sessions/\(id)"
        try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"memory":128,"disk":64}"#).status == 202)
            _ = try await log.state("open")
            #expect(try await api.call(.POST, session + "/start", token: token, body: "{}").status == 202)
            _ = try await log.state("running")
            try await api.waitForIdle(true)
            #expect(try await api.call(.PATCH, session + "/daemon", token: token, body: #"{"controlled":true,"minCap":0}"#).status == 200)
            let count = await log.count
            try sway.input()
            _ = try await log.next("stateChanged", after: count, timeout: .seconds(10)) { $0["state"] as? String == "paused" }
            _ = try await log.next("stateChanged", after: count, timeout: .seconds(10)) {
                $0["state"] as? String == "running" && $0["previous"] as? String == "paused"
            }
        }
        sway.stop()
        try await daemon.stop()
    }

    @Test("GNOME on Wayland: mutter --headless as a non-root user; the daemon asks its IdleMonitor over the session bus, Mutter's virtual pointer makes the desktop active")
    func mutterIdleMonitor() async throws {
        let directory = try TemporaryDirectory("vms-e2e-mutter")
        let mutter = try await MutterCompositor()
        defer { mutter.stop() }
        // As the desktop user (a session bus admits only its own user), with the environment a GNOME Wayland
        // session hands to the user's services; the source is chosen by auto.
        let daemon = try await Self.daemon(
            directory, ["--wayland-display", mutter.runtimeDirectory.path + "/wayland-m"],
            environment: mutter.daemonEnvironment.merging([
                "XDG_CURRENT_DESKTOP": "GNOME", "XDG_SESSION_TYPE": "wayland", "HOME": mutter.runtimeDirectory.path,
                "XDG_RUNTIME_DIR": mutter.runtimeDirectory.path,
            ]) { $1 },
            user: WaylandCompositor.user)
        let api = APIClient(port: daemon.port)
        let status = try await api.waitForDetection("mutter")
        let source = try #require(status["idleSource"] as? [String: Any])
        #expect((source["name"] as? String ?? "").contains(mutter.busAddress))
        #expect((source["reason"] as? String ?? "").contains("GNOME on Wayland"))
        try await api.waitForIdle(true)
        try mutter.input()
        try await api.waitForIdle(false, timeout: .seconds(5))
        try await api.waitForIdle(true)
        try await daemon.stop()
    }

    @Test(
        "the system service's source: real systemd-logind on a private system bus; its IdleHint (idle with no sessions, not idle under an idle inhibitor) drives the desktop state",
        .enabled(if: PrivateLogind.possible, "this machine runs its own logind"))
    func logindIdleHint() async throws {
        let directory = try TemporaryDirectory("vms-e2e-logind-daemon")
        let logind = try await PrivateLogind()
        defer { logind.stop() }
        // No display variables at all, as under the system unit: auto picks logind.
        let daemon = try await Self.daemon(directory, ["--idle-source", "auto"], environment: ["DBUS_SYSTEM_BUS_ADDRESS": logind.address])
        let api = APIClient(port: daemon.port)
        let status = try await api.waitForDetection("logind")
        #expect(((status["idleSource"] as? [String: Any])?["reason"] as? String ?? "").contains("IdleHint"))
        try await api.waitForIdle(true)
        try await logind.inhibitingIdle {
            try await api.waitForIdle(false, timeout: .seconds(5))
        }
        try await api.waitForIdle(true, timeout: .seconds(5))
        try await daemon.stop()
    }
}
