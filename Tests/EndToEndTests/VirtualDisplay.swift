import Foundation

/// A real X server (Xvfb) on a free display number, for the idle controller's end-to-end tests, and
/// xdotool to give it input. Stopped when the test is done.
final class VirtualDisplay: @unchecked Sendable {
    let number: Int
    var name: String { ":\(number)" }
    private let process: Process

    /// A free display number, 99 and up, clear of real desktops.
    static func freeNumber(in range: Range<Int> = 99..<199) throws -> Int {
        guard let free = range.first(where: isFree) else { throw DaemonError("no free X display number in \(range)") }
        return free
    }

    /// X's own rule: a display is taken while its lock file names a live process. A lock left by a server that
    /// was killed holds nothing (the next server on that number replaces the lock and the socket). Without a
    /// lock, a socket alone still counts as taken.
    static func isFree(_ number: Int) -> Bool {
        guard let lock = try? String(contentsOfFile: "/tmp/.X\(number)-lock", encoding: .utf8) else {
            return !FileManager.default.fileExists(atPath: "/tmp/.X11-unix/X\(number)")
        }
        guard let pid = Int32(lock.trimmingCharacters(in: .whitespacesAndNewlines)) else { return false }
        return kill(pid, 0) != 0 && errno == ESRCH
    }

    /// Starts Xvfb on `number` (default: a free one) and waits for its socket.
    init(number given: Int? = nil) async throws {
        let free = try given ?? Self.freeNumber()
        number = free
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/Xvfb")
        process.arguments = [":\(free)", "-screen", "0", "640x480x24", "-nolisten", "tcp"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<100 {
            if FileManager.default.fileExists(atPath: "/tmp/.X11-unix/X\(free)") { return }
            if !process.isRunning { throw DaemonError("Xvfb :\(free) exited with status \(process.terminationStatus)") }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw DaemonError("Xvfb :\(free) did not create its socket within 5 s")
    }

    /// Moves the pointer (real input, which resets the screen saver's idle time).
    func moveMouse() throws {
        let xdotool = Process()
        xdotool.executableURL = URL(fileURLWithPath: "/usr/bin/xdotool")
        xdotool.arguments = ["mousemove", "\(Int.random(in: 10...600))", "\(Int.random(in: 10...400))"]
        xdotool.environment = ["DISPLAY": name]
        try xdotool.run()
        xdotool.waitUntilExit()
        guard xdotool.terminationStatus == 0 else { throw DaemonError("xdotool failed with \(xdotool.terminationStatus)") }
    }

    /// SIGKILL: a throwaway X server has nothing to save, and Xvfb started from the test process may
    /// inherit a signal mask that blocks SIGTERM. Killed, it cannot remove its lock file and socket, so they
    /// go here: left behind, every run took one more display number until none was free (CI failed so).
    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: "/tmp/.X\(number)-lock")
        try? FileManager.default.removeItem(atPath: "/tmp/.X11-unix/X\(number)")
    }

    deinit { stop() }
}
