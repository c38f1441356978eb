import Foundation
import Testing
import VMSessionTestSupport

/// The real daemon pages out what start-up alone needed once it has settled (``StartupMemoryRelease``), as
/// root and as an unprivileged user, and every request after that is served by code the kernel reads back
/// in: paging out is a hint that loses nothing. How much it saves is measured by `make bench`
/// (Benchmarks/footprint.py), not asserted here.
@Suite("Memory release (daemon process, test driver)", .serialized)
struct MemoryReleaseTests {
    @Test("start-up memory is released once the daemon settles, and sessions still open and change after it",
          arguments: [false, true])
    func releasedAndStillServing(unprivileged: Bool) async throws {
        let directory = try TemporaryDirectory("vms-e2e-memory")
        var binary = DaemonProcess.binary
        var user: String?
        if unprivileged {
            let account = try UnprivilegedUser.ensure()
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
            binary = try account.daemonBinary(copyingInto: directory.path)
            user = UnprivilegedUser.name
        }
        let daemon = DaemonProcess(
            stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default", "--log-level", "info"],
            binary: binary, user: user)
        try await daemon.start()

        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        while !daemon.log().contains("memory released"), clock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        let line = try #require(daemon.log().split(separator: "\n").first { $0.contains("memory released") }, "the release is logged")
        let advised = line.range(of: #"advisedKiB=\d+"#, options: .regularExpression).flatMap { Int(line[$0].dropFirst("advisedKiB=".count)) } ?? 0
        #expect(advised > 0, "the binary's and its libraries' read-only mappings were advised: \(line)")
        #expect(line.contains("failures=0"), "the kernel took every advice: \(line)")

        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("after-release")
        #expect(try await api.call(.GET, "/api/v1/sessions/\(id)", token: token).status == 200)
        #expect(try await api.call(.PUT, "/api/v1/sessions/\(id)/properties/p", token: token, body: #"{"value":"v"}"#).status == 200)
        #expect(try await api.call(.GET, "/api/v1", token: nil).status == 200)
        try await daemon.stop()
    }
}
