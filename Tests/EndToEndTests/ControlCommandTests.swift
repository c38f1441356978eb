import Foundation
import Testing
import VMSessionTestSupport

/// `vmsessionctl` as a user types it, against the real daemon (test driver).
@Suite("vmsessionctl (daemon process, test driver)", .serialized)
struct ControlCommandTests {
    static var binary: String {
        ProcessInfo.processInfo.environment["VMSESSIONCTL_BINARY"] ?? DaemonProcess.packageRoot + "/.build/debug/vmsessionctl"
    }

    /// Runs vmsessionctl; returns its exit status and what it printed (stdout and stderr).
    static func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await Command.run(binary, arguments)
    }

    @Test("global options go before or after the subcommand, sessions are named by id or name, JSON keeps its slashes")
    func globalOptionsAndNames() async throws {
        let directory = try TemporaryDirectory("vms-e2e-ctl")
        let daemon = DaemonProcess(stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default"])
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let (id, _) = try await api.newSession("my demo")
        let url = "http://127.0.0.1:\(daemon.port)"

        let before = try await Self.run(["--url", url, "--state-dir", daemon.stateDirectory, "sessions", "list"])
        #expect(before.status == 0, "\(before.output)")
        #expect(before.output.contains("my demo"))
        let mixed = try await Self.run(["--state-dir=\(daemon.stateDirectory)", "sessions", "list", "--url", url])
        #expect(mixed.status == 0, "\(mixed.output)")
        #expect(mixed.output.contains(id))

        let byName = try await Self.run(["--url", url, "--state-dir", daemon.stateDirectory, "sessions", "show", "my demo"])
        #expect(byName.status == 0, "\(byName.output)")
        #expect(byName.output.contains(#""id" : "\#(id)""#))

        let origins = try await Self.run(["--url", url, "--state-dir", daemon.stateDirectory, "origins", "approve", "http://localhost:8000"])
        #expect(origins.status == 0, "\(origins.output)")
        let listed = try await Self.run(["--url", url, "--state-dir", daemon.stateDirectory, "--json", "origins", "list"])
        #expect(listed.output.contains("http://localhost:8000"), "no escaped slashes: \(listed.output)")

        let unknown = try await Self.run(["--url", url, "--state-dir", daemon.stateDirectory, "sessions", "close", "nobody"])
        #expect(unknown.status != 0)
        #expect(unknown.output.contains("There is no session with the id or name 'nobody'"))

        // The name reaches the session: the daemon's own refusal comes back (a new session is already closed).
        let closed = try await Self.run(["--url", url, "--state-dir", daemon.stateDirectory, "sessions", "close", "my demo"])
        #expect(closed.status != 0)
        #expect(closed.output.contains("invalid_state"), "\(closed.output)")
        try await daemon.stop()
    }
}
