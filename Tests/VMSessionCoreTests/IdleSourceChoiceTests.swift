import Testing
import VMSessionCore

/// The idle source chosen from the session's environment: every combination of the variables a session
/// hands its processes, whether their sockets exist, and the configured preference.
@Suite("Idle source choice")
struct IdleSourceChoiceTests {
    typealias Env = SessionEnvironment

    @Test("an X11 session with its socket: the X screen saver extension")
    func x11Session() {
        let choice = IdleSourceChoice.choose(Env(display: ":0", sessionType: "x11", xSocketPresent: true))
        #expect(choice.kind == .xscreensaver)
        #expect(choice.reason.contains("DISPLAY=:0"))
        #expect(!choice.reason.contains("waiting"))
    }

    @Test("a sway/KDE Wayland session (with XWayland's DISPLAY too): the compositor's idle protocol, not X")
    func waylandBeatsXWayland() {
        let env = Env(
            waylandDisplay: "wayland-1", display: ":0", sessionType: "wayland", currentDesktop: "sway", runtimeDirectory: "/run/user/1000",
            waylandSocketPresent: true, xSocketPresent: true)
        let choice = IdleSourceChoice.choose(env)
        #expect(choice.kind == .wayland)
        #expect(choice.reason.contains("/run/user/1000/wayland-1"))
    }

    @Test("GNOME on Wayland with a session bus: Mutter's idle monitor; without the bus: the Wayland protocol")
    func gnomeOnWayland() {
        var env = Env(
            waylandDisplay: "wayland-0", display: ":0", sessionType: "wayland", currentDesktop: "ubuntu:GNOME",
            sessionBus: "unix:path=/run/user/1000/bus", runtimeDirectory: "/run/user/1000", waylandSocketPresent: true, xSocketPresent: true)
        #expect(IdleSourceChoice.choose(env).kind == .mutter)
        env.sessionBus = nil
        #expect(IdleSourceChoice.choose(env).kind == .wayland)
    }

    @Test("GNOME on X11: the X screen saver extension (X sees all input there)")
    func gnomeOnX11() {
        let env = Env(
            display: ":1", sessionType: "x11", currentDesktop: "GNOME", sessionBus: "unix:path=/run/user/1000/bus", xSocketPresent: true)
        #expect(IdleSourceChoice.choose(env).kind == .xscreensaver)
    }

    @Test("an X11 session that also names a nested Wayland display: X first")
    func x11SessionPrefersX() {
        let env = Env(waylandDisplay: "wayland-9", display: ":0", sessionType: "x11", waylandSocketPresent: true, xSocketPresent: true)
        #expect(IdleSourceChoice.choose(env).kind == .xscreensaver)
    }

    @Test("a display not there yet is chosen and waited for; once its socket appears the same source is chosen without 'waiting'")
    func displayAppearsLater() {
        var env = Env(display: ":99")
        let before = IdleSourceChoice.choose(env)
        #expect(before.kind == .xscreensaver)
        #expect(before.reason.contains("waiting"))
        env.xSocketPresent = true
        let after = IdleSourceChoice.choose(env)
        #expect(after.kind == .xscreensaver)
        #expect(!after.reason.contains("waiting"))
    }

    @Test("the session changes: Wayland's socket goes away while X is there, so X is chosen; it comes back, Wayland again")
    func sessionChanges() {
        var env = Env(waylandDisplay: "wayland-1", display: ":0", runtimeDirectory: "/run/user/1", waylandSocketPresent: true, xSocketPresent: true)
        #expect(IdleSourceChoice.choose(env).kind == .wayland)
        env.waylandSocketPresent = false
        #expect(IdleSourceChoice.choose(env).kind == .xscreensaver)
        env.waylandSocketPresent = true
        #expect(IdleSourceChoice.choose(env).kind == .wayland)
    }

    @Test("neither socket there: the first the environment names is waited for (Wayland on a Wayland session)")
    func nothingPresent() {
        let env = Env(waylandDisplay: "wayland-1", display: ":0", sessionType: "wayland", runtimeDirectory: "/run/user/1")
        let choice = IdleSourceChoice.choose(env)
        #expect(choice.kind == .wayland)
        #expect(choice.reason.contains("waiting"))
    }

    @Test("a TCP display (host:N) has no local socket to look for and counts as there")
    func tcpDisplay() {
        let env = Env(display: "remote:10.0")
        #expect(env.xSocketPath == nil)
        let choice = IdleSourceChoice.choose(env)
        #expect(choice.kind == .xscreensaver)
        #expect(!choice.reason.contains("waiting"))
    }

    @Test("no display variables (the system service): logind's IdleHint, and the reason says so")
    func systemService() {
        let choice = IdleSourceChoice.choose(Env())
        #expect(choice.kind == .logind)
        #expect(choice.reason.contains("IdleHint"))
        #expect(IdleSourceChoice.choose(Env(sessionBus: "unix:path=/x", runtimeDirectory: "/run/user/1")).kind == .logind)
    }

    @Test("a configured source wins over the environment, and says what it lacks")
    func preferenceWins() {
        let env = Env(waylandDisplay: "wayland-1", display: ":0", waylandSocketPresent: true, xSocketPresent: true)
        for preference in IdleSourceChoice.Preference.allCases where preference != .auto && preference != .none {
            let choice = IdleSourceChoice.choose(env, preference: preference)
            #expect(choice.kind?.rawValue == preference.rawValue)
            #expect(choice.reason.contains("configured"))
        }
        #expect(IdleSourceChoice.choose(env, preference: .none).kind == nil)
        #expect(IdleSourceChoice.choose(Env(), preference: .xscreensaver).reason.contains("DISPLAY is not set"))
        #expect(IdleSourceChoice.choose(Env(), preference: .wayland).reason.contains("WAYLAND_DISPLAY is not set"))
        #expect(IdleSourceChoice.choose(Env(), preference: .mutter).reason.contains("DBUS_SESSION_BUS_ADDRESS"))
    }

    @Test("socket paths: WAYLAND_DISPLAY absolute or under XDG_RUNTIME_DIR; X's :N, unix:N and :N.S")
    func socketPaths() {
        #expect(Env(waylandDisplay: "/tmp/x/wayland-3").waylandSocketPath == "/tmp/x/wayland-3")
        #expect(Env(waylandDisplay: "wayland-3", runtimeDirectory: "/run/user/7").waylandSocketPath == "/run/user/7/wayland-3")
        #expect(Env(waylandDisplay: "wayland-3").waylandSocketPath == nil)
        #expect(Env(display: ":12").xSocketPath == "/tmp/.X11-unix/X12")
        #expect(Env(display: "unix:3.1").xSocketPath == "/tmp/.X11-unix/X3")
        #expect(Env(display: ":x").xSocketPath == nil)
        #expect(Env(display: "").display == nil)
    }

    @Test("XDG_CURRENT_DESKTOP is a list: GNOME anywhere in it, any case")
    func desktopList() {
        #expect(Env(currentDesktop: "ubuntu:GNOME").isGNOME)
        #expect(Env(currentDesktop: "gnome").isGNOME)
        #expect(!Env(currentDesktop: "GNOME-Flashback-ish:KDE").isGNOME)
        #expect(!Env().isGNOME)
    }

    /// Every combination of the inputs: the choice always names a source the environment can reach,
    /// or waits for one it names, or falls back to logind only when no display is named.
    @Test("exhaustively: auto never picks a source whose variable is missing, and picks a present one when there is one")
    func exhaustive() {
        let options: [String?] = [nil, "x"]
        for wayland in options { for display in options { for type in [nil, "x11", "wayland", "tty"] { for desktop in [nil, "GNOME", "KDE"] {
            for bus in options { for waylandPresent in [false, true] { for xPresent in [false, true] {
                let env = Env(
                    waylandDisplay: wayland.map { _ in "wayland-0" }, display: display.map { _ in ":0" }, sessionType: type,
                    currentDesktop: desktop, sessionBus: bus.map { _ in "unix:path=/b" }, runtimeDirectory: "/r",
                    waylandSocketPresent: waylandPresent && wayland != nil, xSocketPresent: xPresent && display != nil)
                let choice = IdleSourceChoice.choose(env)
                switch choice.kind {
                case .xscreensaver?: #expect(env.display != nil)
                case .wayland?: #expect(env.waylandDisplay != nil)
                case .mutter?: #expect(env.isGNOME && env.sessionBus != nil && env.waylandDisplay != nil)
                case .logind?: #expect(env.display == nil && env.waylandDisplay == nil)
                case nil: Issue.record("auto never turns detection off")
                }
                let anyPresent = env.waylandSocketPresent || env.xSocketPresent
                #expect(choice.reason.contains("waiting") == (!anyPresent && choice.kind != .logind), "\(env) -> \(choice)")
            } } } } } } }
    }
}

@Suite("Idle from notifications")
struct IdleNotificationsTests {
    @Test("before any event and after 'resumed' the reading is 0; after 'idled' it is the time since plus the timeout")
    func readings() {
        let start = ContinuousClock.now
        var notes = IdleNotifications<ContinuousClock.Instant>(timeout: .seconds(1))
        #expect(notes.idleMilliseconds(at: start + .seconds(5)) == 0)
        notes.idled(at: start + .seconds(1))
        #expect(notes.idleMilliseconds(at: start + .seconds(1)) == 1000)
        #expect(notes.idleMilliseconds(at: start + .milliseconds(3500)) == 3500)
        notes.resumed(at: start + .seconds(4))
        #expect(notes.idleMilliseconds(at: start + .seconds(4)) == 0)
        #expect(notes.idleSince == nil)
    }

    @Test("logind: idle for the time since the hint was set (since boot if unset), 0 when not idle or the clock is behind")
    func logind() {
        #expect(IdleNotifications<ContinuousClock.Instant>.logindMilliseconds(idleHint: true, idleSinceMicroseconds: 1_000_000, nowMicroseconds: 4_500_000) == 3500)
        #expect(IdleNotifications<ContinuousClock.Instant>.logindMilliseconds(idleHint: false, idleSinceMicroseconds: 1_000_000, nowMicroseconds: 4_500_000) == 0)
        #expect(IdleNotifications<ContinuousClock.Instant>.logindMilliseconds(idleHint: true, idleSinceMicroseconds: 5_000_000, nowMicroseconds: 4_500_000) == 0)
        #expect(IdleNotifications<ContinuousClock.Instant>.logindMilliseconds(idleHint: true, idleSinceMicroseconds: 0, nowMicroseconds: 4_500_000) == 4500,
                "idle with no moment: since boot")
    }
}
