import Foundation
import VMSessionTestSupport

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

    static func ids() throws -> (uid_t, gid_t) {
        guard let entry = getpwnam(user) else { throw DaemonError("no user \(user)") }
        return (entry.pointee.pw_uid, entry.pointee.pw_gid)
    }

    /// Creates the unprivileged system user once (tests run as root; sway will not).
    static func ensureUser() throws {
        if getpwnam(user) != nil { return }
        let useradd = Process()
        useradd.executableURL = URL(fileURLWithPath: "/usr/sbin/useradd")
        useradd.arguments = ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user]
        try useradd.run()
        useradd.waitUntilExit()
        guard getpwnam(user) != nil else { throw DaemonError("useradd \(user) failed with \(useradd.terminationStatus)") }
    }
}

/// GNOME's compositor, Debian's `mutter --headless` (a virtual monitor, no X), run as the non-root test user
/// on a session bus of its own. The daemon asks its `org.gnome.Mutter.IdleMonitor`; input is real input
/// through Mutter's own `org.gnome.Mutter.RemoteDesktop` virtual pointer (a small python3-dbus client kept
/// running as the same user, since a remote-desktop session ends with its D-Bus connection).
final class MutterCompositor: TestDesktop, @unchecked Sendable {
    let runtimeDirectory: TemporaryDirectory
    let busAddress: String
    private let bus: Process
    private let mutter: Process
    private let pointer: Process
    private let pointerInput: Pipe
    private let pointerOutput: Pipe

    var daemonArguments: [String] { ["--idle-source", "mutter"] }
    var daemonEnvironment: [String: String] { ["DBUS_SESSION_BUS_ADDRESS": busAddress] }
    var detection: String { "mutter" }

    static let pointerScript = """
        import dbus, sys, time
        bus = dbus.SessionBus()
        name = "org.gnome.Mutter.RemoteDesktop"
        for attempt in range(100):
            try:
                path = bus.get_object(name, "/org/gnome/Mutter/RemoteDesktop").CreateSession(dbus_interface=name)
                break
            except dbus.DBusException:
                time.sleep(0.1)
        session = dbus.Interface(bus.get_object(name, path), name + ".Session")
        session.Start()
        print("ready", flush=True)
        for line in sys.stdin:
            session.NotifyPointerMotionRelative(5.0, 5.0)
            print("moved", flush=True)
        """

    init() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/mutter") else { throw DaemonError("mutter is not installed (make deps)") }
        try WaylandCompositor.ensureUser()
        runtimeDirectory = try TemporaryDirectory("vms-e2e-mutter")
        let (uid, gid) = try WaylandCompositor.ids()
        guard chown(runtimeDirectory.path, uid, gid) == 0, chmod(runtimeDirectory.path, 0o700) == 0 else {
            throw DaemonError("cannot hand \(runtimeDirectory.path) to \(WaylandCompositor.user)")
        }
        busAddress = "unix:path=\(runtimeDirectory.path)/bus"
        let user = ["--reuid", WaylandCompositor.user, "--regid", WaylandCompositor.user, "--init-groups", "/usr/bin/env", "-i",
                    "HOME=\(runtimeDirectory.path)", "XDG_RUNTIME_DIR=\(runtimeDirectory.path)", "PATH=/usr/bin:/bin",
                    "DBUS_SESSION_BUS_ADDRESS=\(busAddress)"]
        func process(_ arguments: [String]) -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = user + arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            return process
        }
        bus = process(["/usr/bin/dbus-daemon", "--session", "--nofork", "--nopidfile", "--address=\(busAddress)"])
        mutter = process(["/usr/bin/mutter", "--headless", "--wayland", "--no-x11", "--virtual-monitor", "640x480", "--wayland-display", "wayland-m"])
        pointer = process(["/usr/bin/python3", "-c", Self.pointerScript])
        pointerInput = Pipe()
        pointerOutput = Pipe()
        pointer.standardInput = pointerInput
        pointer.standardOutput = pointerOutput
        try bus.run()
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: runtimeDirectory.path + "/bus") {
            try await Task.sleep(for: .milliseconds(50))
        }
        try mutter.run()
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: runtimeDirectory.path + "/wayland-m") {
            guard mutter.isRunning else { stop(); throw DaemonError("mutter exited with status \(mutter.terminationStatus)") }
            try await Task.sleep(for: .milliseconds(50))
        }
        // The remote-desktop service is on the bus shortly after the Wayland socket (the client waits for it).
        try pointer.run()
        if try await Self.readLine(from: pointerOutput) == "ready" { return }
        stop()
        throw DaemonError("mutter's RemoteDesktop session could not be started")
    }

    /// Real input: Mutter's virtual pointer moves.
    func input() throws {
        pointerInput.fileHandleForWriting.write(Data("move\n".utf8))
        guard Self.blockingReadLine(from: pointerOutput) == "moved" else { throw DaemonError("mutter's virtual pointer did not move") }
    }

    /// The helper's next line, read on a thread of its own (its first, "ready", may take seconds).
    private static func readLine(from pipe: Pipe) async throws -> String? {
        try await Command.onThread { blockingReadLine(from: pipe) }
    }

    private static func blockingReadLine(from pipe: Pipe) -> String? {
        var bytes: [UInt8] = []
        while true {
            let chunk = pipe.fileHandleForReading.readData(ofLength: 1)
            guard let byte = chunk.first else { return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self) }
            if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
    }

    func stop() {
        for process in [pointer, mutter, bus] where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

/// systemd-logind (Debian's) on a private system bus of its own (`dbus-daemon` with the system config at
/// an address in a temporary directory), for machines not booted with systemd, where no logind runs.
/// No session can be registered without systemd as PID 1, so its `IdleHint` is driven by what logind
/// itself honours: with no sessions it is true, and an idle inhibitor (`systemd-inhibit --what=idle`)
/// makes it false. Both processes are killed when the test is done.
final class PrivateLogind: @unchecked Sendable {
    let directory: TemporaryDirectory
    var address: String { "unix:path=\(directory.path)/system_bus_socket" }
    private let bus: Process
    private let logind: Process

    /// Whether a private logind may run here: not on a machine booted with systemd (its own logind owns
    /// /run/systemd, and a second one would disturb it).
    static var possible: Bool {
        !FileManager.default.fileExists(atPath: "/run/systemd/system")
            && FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd-logind")
    }

    init() async throws {
        directory = try TemporaryDirectory("vms-e2e-logind")
        bus = Process()
        bus.executableURL = URL(fileURLWithPath: "/usr/bin/dbus-daemon")
        bus.arguments = ["--config-file=/usr/share/dbus-1/system.conf", "--address=unix:path=\(directory.path)/system_bus_socket", "--nofork", "--nopidfile"]
        bus.standardOutput = FileHandle.nullDevice
        bus.standardError = FileHandle.nullDevice
        try bus.run()
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: directory.path + "/system_bus_socket") {
            try await Task.sleep(for: .milliseconds(50))
        }
        logind = Process()
        logind.executableURL = URL(fileURLWithPath: "/lib/systemd/systemd-logind")
        logind.environment = ["DBUS_SYSTEM_BUS_ADDRESS": "unix:path=\(directory.path)/system_bus_socket"]
        logind.standardOutput = FileHandle.nullDevice
        logind.standardError = FileHandle.nullDevice
        try logind.run()
    }

    /// Holds an idle inhibitor while `body` runs (logind's IdleHint is false meanwhile).
    func inhibitingIdle<T>(_ body: () async throws -> T) async throws -> T {
        let inhibit = Process()
        inhibit.executableURL = URL(fileURLWithPath: "/usr/bin/systemd-inhibit")
        inhibit.arguments = ["--what=idle", "--who=vmsessiond-tests", "--why=test", "sleep", "60"]
        inhibit.environment = ["DBUS_SYSTEM_BUS_ADDRESS": address, "PATH": "/usr/bin:/bin"]
        inhibit.standardOutput = FileHandle.nullDevice
        try inhibit.run()
        defer {
            kill(inhibit.processIdentifier, SIGKILL)
            inhibit.waitUntilExit()
        }
        return try await body()
    }

    func stop() {
        for process in [logind, bus] where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}
