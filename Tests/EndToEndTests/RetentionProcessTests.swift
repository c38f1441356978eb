import Foundation
import Testing
import VMSessionTestSupport

/// Retention in the real daemon: what it prunes at start, and how a replay that reaches into pruned events
/// is told so instead of silently missing them.
@Suite("Retention (daemon process, test driver)", .serialized)
struct RetentionProcessTests {
    @Test("pruned events are announced on replay, and pruned tokens stop working")
    func replayAfterPruning() async throws {
        let directory = try TemporaryDirectory("vms-e2e-retention")
        let config = directory.path + "/config.json"
        try #"{"eventsPerSession": "3", "tokensPerSession": "1"}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let daemon = DaemonProcess(
            stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default", "--config", config])
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let (id, oldToken) = try await api.newSession("kept-short", secret: "pw")
        for index in 0..<8 {
            let reply = try await api.call(.PUT, "/api/v1/sessions/\(id)/properties/p", token: oldToken, body: #"{"value":"\#(index)"}"#)
            #expect(reply.status == 200)
        }
        let newToken = try #require(try await api.call(.POST, "/api/v1/sessions", body: #"{"name":"kept-short","secret":"pw"}"#)["token"] as? String)
        try await daemon.stop()

        // The housekeeper sweeps at start.
        try await daemon.start()
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(10)
        while !daemon.log().contains("retention"), clock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(daemon.log().contains("retention"))
        let api2 = APIClient(port: daemon.port)
        #expect(try await api2.call(.GET, "/api/v1/sessions/\(id)", token: oldToken).status == 401, "the older token was pruned")
        #expect(try await api2.call(.GET, "/api/v1/sessions/\(id)", token: newToken).status == 200)

        let text = try await Self.replay(port: daemon.port, id: id, token: newToken)
        let frames = text.components(separatedBy: "\n\n").filter { $0.contains("event: ") }
        #expect(frames.first?.contains("event: eventsDropped") == true, "the gap comes first: \(frames.first ?? "")")
        #expect(frames.first?.contains("id: ") == false, "the gap frame does not move Last-Event-ID")
        let replayed = frames.dropFirst().filter { $0.contains("id: ") }
        #expect(replayed.count == 3, "the newest three events are replayed: \(replayed)")
        try await daemon.stop()
    }

    /// The first second of a replay from the start, as text.
    static func replay(port: Int, id: String, token: String) async throws -> String {
        try await Command.run(
            "/usr/bin/curl", ["-sN", "--max-time", "1", "http://127.0.0.1:\(port)/api/v1/sessions/\(id)/events?since=0&token=\(token)"]
        ).output
    }
}
