import Foundation

/// A desktop the idle controller's end-to-end tests can drive: how the daemon finds it, and real input.
protocol TestDesktop: Sendable {
    /// The daemon's flags that point it at this desktop.
    var daemonArguments: [String] { get }
    /// The idle source the daemon should report (`idleDetection`).
    var detection: String { get }
    /// Real input: resets the desktop's idle time.
    func input() throws
    func stop()
}

extension VirtualDisplay: TestDesktop {
    var daemonArguments: [String] { ["--idle-source", "xscreensaver", "--display", name] }
    var detection: String { "xscreensaver" }
    func input() throws { try moveMouse() }
}

/// sway 1.7 (Debian's), headless (`WLR_BACKENDS=headless`, pixman renderer), run as a non-root user the
/// test creates if needed (sway refuses to run as root), with that user's own `XDG_RUNTIME_DIR`. Input
/// is `swaymsg seat - cursor move`, which sway counts as seat activity for its idle protocol
/// (`org_kde_kwin_idle`). Stopped, and its runtime directory removed, when the test is done.
final class WaylandCompositor: TestDesktop, @unchecked Sendable {
    static let user = "vmsessiond-test-wl"

    let runtimeDirectory: TemporaryDirectory
    let socket: String
    private let process: Process
    private let ipc: String

    var daemonArguments: [String] { ["--idle-source", "wayland", "--wayland-display", socket] }
    var detection: String { "wayland" }

    /// Starts sway; `runtimeDirectory` may be given so that a second compositor takes the same socket path.
    init(runtimeDirectory given: TemporaryDirectory? = nil) async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/sway") else { throw DaemonError("sway is not installed (make deps)") }
        try Self.ensureUser()
        runtimeDirectory = try given ?? TemporaryDirectory("vms-e2e-wayland")
        let (uid, gid) = try Self.ids()
        guard chown(runtimeDirectory.path, uid, gid) == 0, chmod(runtimeDirectory.path, 0o700) == 0 else {
            throw DaemonError("cannot hand \(runtimeDirectory.path) to \(Self.user)")
        }
        socket = runtimeDirectory.path + "/wayland-1"
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = [
            "--reuid", Self.user, "--regid", Self.user, "--init-groups", "/usr/bin/env", "-i",
            "HOME=\(runtimeDirectory.path)", "XDG_RUNTIME_DIR=\(runtimeDirectory.path)", "WAYLAND_DISPLAY=wayland-1",
            "WLR_BACKENDS=headless", "WLR_RENDERER=pixman", "WLR_LIBINPUT_NO_DEVICES=1",
            "/usr/bin/sway", "-c", "/dev/null",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var found: String?
        for _ in 0..<200 {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: runtimeDirectory.path)) ?? []
            if entries.contains("wayland-1"), let sock = entries.first(where: { $0.hasPrefix("sway-ipc.") }) {
                found = runtimeDirectory.path + "/" + sock
                break
            }
            if !process.isRunning { throw DaemonError("sway exited with status \(process.terminationStatus)") }
            try await Task.sleep(for: .milliseconds(50))
        }
        guard let found else {
            kill(process.processIdentifier, SIGKILL)
            throw DaemonError("sway did not create its sockets within 10 s")
        }
        ipc = found
    }

    /// Real input through sway's IPC: the seat's cursor moves.
    func input() throws {
        let swaymsg = Process()
        swaymsg.executableURL = URL(fileURLWithPath: "/usr/bin/swaymsg")
        swaymsg.arguments = ["-s", ipc, "seat", "-", "cursor", "move", "\(Int.random(in: 1...20))", "\(Int.random(in: 1...20))"]
        swaymsg.standardOutput = FileHandle.nullDevice
        try swaymsg.run()
        swaymsg.waitUntilExit()
        guard swaymsg.terminationStatus == 0 else { throw DaemonError("swaymsg failed with \(swaymsg.terminationStatus)") }
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        // A killed compositor leaves its sockets; a later one on the same directory must not find them.
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: runtimeDirectory.path)) ?? [] {
            try? FileManager.default.removeItem(atPath: runtimeDirectory.path + "/" + entry)
        }
    }

    deinit { stop() }

    private static func ids() throws -> (uid_t, gid_t) {
        guard let entry = getpwnam(user) else { throw DaemonError("no user \(user)") }
        return (entry.pointee.pw_uid, entry.pointee.pw_gid)
    }

    /// Creates the unprivileged system user once (tests run as root; sway will not).
    private static func ensureUser() throws {
        if getpwnam(user) != nil { return }
        let useradd = Process()
        useradd.executableURL = URL(fileURLWithPath: "/usr/sbin/useradd")
        useradd.arguments = ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user]
        try useradd.run()
        useradd.waitUntilExit()
        guard getpwnam(user) != nil else { throw DaemonError("useradd \(user) failed with \(useradd.terminationStatus)") }
    }
}
