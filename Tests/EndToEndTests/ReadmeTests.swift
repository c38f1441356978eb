import Foundation
import Testing
import VMSessionTestSupport

/// The README's "Trying it with curl" block, pasted as a newcomer would: run as it is (but for the port and
/// the events file) by bash against the real daemon and a real guest under TCG.
extension RealGuestSuites {
@Suite("README examples", .serialized)
struct ReadmeTests {
    /// The first ```sh block after `heading` in the README.
    static func shellBlock(after heading: String) throws -> String {
        let readme = try String(contentsOfFile: DaemonProcess.packageRoot + "/README.md", encoding: .utf8)
        let section = try #require(readme.range(of: heading)).upperBound
        let open = try #require(readme.range(of: "```sh\n", range: section..<readme.endIndex))
        let close = try #require(readme.range(of: "\n```", range: open.upperBound..<readme.endIndex))
        return String(readme[open.upperBound..<close.lowerBound])
    }

    @Test("the curl walk-through runs as pasted: every action succeeds, the guest serves its user-data, and the session is gone at the end")
    func curlWalkThrough() async throws {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "the appliance must be built first (make appliance)")
        let directory = try TemporaryDirectory("vms-readme")
        let daemon = DaemonProcess(
            stateDirectory: directory.path + "/state", arguments: ["--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "10"])
        try await daemon.start()
        let events = directory.path + "/events.log"
        var script = try Self.shellBlock(after: "## Trying it with curl")
        #expect(script.contains("http://127.0.0.1:7011"), "the block uses the default address")
        script = script.replacingOccurrences(of: "http://127.0.0.1:7011", with: "http://127.0.0.1:\(daemon.port)")
            .replacingOccurrences(of: "/tmp/vms-events.log", with: events)
        // What a reader checks by hand after the start: the guest serves what its user-data wrote.
        script = script.replacingOccurrences(
            of: "act pause\n",
            with: """
                for _ in $(seq 120); do curl -sf -H "$AUTH" "$(curl -s -H "$AUTH" $API/sessions/$ID | json '["apiURL"]')/" && break; sleep 1; done
                act pause

                """)
        // A block that hangs (a stream that never ends) fails here instead of stalling the suite.
        let (status, output) = try await Command.run("/usr/bin/timeout", ["600", "/bin/bash", "-c", script])
        #expect(status == 0, "the block failed:\n\(output)\n--- daemon log:\n\(daemon.log().suffix(3000))")
        for action in ["open", "start", "pause", "resume", "hibernate", "close"] {
            #expect(output.contains("\(action): succeeded"), "\(action) did not succeed:\n\(output)")
        }
        #expect(output.components(separatedBy: "start: succeeded").count == 3, "start and restore both succeeded:\n\(output)")
        #expect(output.contains("running"))
        #expect(output.contains("hello Ada"), "the template was filled and the guest serves it:\n\(output)")
        let log = try String(contentsOfFile: events, encoding: .utf8)
        #expect(log.contains(#""state":"closed""#), "the events file followed the session to its close")
        // The session was deleted at the end: the name is free.
        let api = APIClient(port: daemon.port)
        #expect(try await api.call(.POST, "/api/v1/sessions", body: #"{"name":"demo","secret":"another"}"#).status == 201)
        try await daemon.stop()
    }
}
}
