import Foundation
import Testing

/// The real `vmsessiond` binary, started for a test in a state directory of its own and stopped (SIGTERM,
/// then SIGKILL if it lingers) when the test is done.
final class DaemonProcess: @unchecked Sendable {
    let stateDirectory: String
    let arguments: [String]
    /// A command that runs the daemon (e.g. as another user, in a cgroup): it gets the binary and its
    /// arguments after its own and must `exec` them, so that the process signalled is the daemon.
    let launcher: [String]
    let binary: String
    private(set) var port = 0
    private var process: Process?
    private var logHandle: FileHandle?

    /// The source tree's root, for defaults when the Makefile did not say where things are.
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    static var binary: String {
        ProcessInfo.processInfo.environment["VMSESSIOND_BINARY"] ?? packageRoot + "/.build/debug/vmsessiond"
    }

    static var applianceDirectory: String {
        ProcessInfo.processInfo.environment["VMSESSIOND_TEST_APPLIANCE"] ?? packageRoot + "/.cache/appliance"
    }

    var logPath: String { stateDirectory + "/daemon.log" }

    /// Variables added to the test's own environment for the daemon (e.g. a session bus address).
    let environment: [String: String]

    /// A non-root user to run the daemon as (its state directory is handed to that user), or nil for root.
    let user: String?

    init(
        stateDirectory: String, arguments: [String], launcher: [String] = [], binary: String = DaemonProcess.binary,
        environment: [String: String] = [:], user: String? = nil
    ) {
        self.stateDirectory = stateDirectory
        self.arguments = arguments
        self.launcher = launcher
        self.binary = binary
        self.environment = environment
        self.user = user
    }

    /// Starts the daemon on a free port and waits until it says where it listens.
    /// The admin token the daemon wrote into its state directory.
    func adminToken() throws -> String {
        try String(contentsOfFile: stateDirectory + "/admin-token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func start() async throws {
        try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
        if !FileManager.default.fileExists(atPath: logPath) { FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        try log.seekToEnd()
        let logStart = try log.offset()
        let process = Process()
        var command = launcher + [binary, "--listen", "127.0.0.1:0", "--state-dir", stateDirectory] + arguments
        if let user, let entry = getpwnam(user) {
            for path in [stateDirectory, logPath] { _ = chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) }
            command = ["/usr/bin/setpriv", "--reuid", user, "--regid", user, "--init-groups"] + command
        }
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardError = log
        process.standardOutput = log
        try process.run()
        self.process = process
        self.logHandle = log
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let text = try String(contentsOfFile: logPath, encoding: .utf8)
            let fresh = text.utf8.count > Int(logStart) ? String(text.utf8.dropFirst(Int(logStart))) ?? "" : ""
            if let range = fresh.range(of: #"listening on http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(fresh[range].split(separator: ":").last ?? "") ?? 0
                return
            }
            if !process.isRunning {
                throw DaemonError("vmsessiond exited with status \(process.terminationStatus):\n\(fresh)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw DaemonError("vmsessiond did not start listening within 60 s; see \(logPath)")
    }

    /// SIGTERM, and a graceful exit within 30 s, or SIGKILL and a failure.
    func stop() async throws {
        guard let process, process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        defer { self.process = nil; try? logHandle?.close() }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            throw DaemonError("vmsessiond did not exit within 30 s of SIGTERM")
        }
        #expect(process.terminationStatus == 0, "vmsessiond exits cleanly on SIGTERM")
    }

    /// The running daemon's process id (to read its memory high-water mark, for instance).
    var processID: Int32? { process?.processIdentifier }

    /// SIGKILL, as a crash or the OOM killer would: nothing is cleaned up, the VMs' qemu keep running.
    func kill9() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
        try? logHandle?.close()
    }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit {
        if let process, process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

struct DaemonError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
