import Foundation
import Testing
import VMSessionTestSupport

/// The real daemon binary against libvirt's test driver: what survives a restart, and the guards at the edge.
@Suite("Daemon process (test driver)", .serialized)
struct DaemonRestartTests {
    @Test("a session and its whole event history survive a restart of the daemon")
    func sessionSurvivesRestart() async throws {
        let directory = try TemporaryDirectory("vms-e2e-restart")
        let appliance = try directory.standInAppliance()
        let daemon = DaemonProcess(
            stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default", "--appliance-dir", appliance])
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("survivor", secret: "keep-me")

        let before = try await api.withEvents(session: id, token: token, since: 0) { log in
            let open = try await api.call(.POST, "/api/v1/sessions/\(id)/open", token: token, body: #"{"memory":128,"disk":64}"#)
            #expect(open.status == 202)
            _ = try await log.state("open")
            _ = try await log.next("operationCompleted")
            return await log.events
        }
        #expect(before.first?.type == "sessionCreated")
        #expect(before.map(\.id) == before.map(\.id).sorted())
        try await daemon.stop()

        try await daemon.start()
        let api2 = APIClient(port: daemon.port)
        let session = try await api2.call(.GET, "/api/v1/sessions/\(id)", token: token)
        #expect(session.status == 200, "the token still works after the restart")
        #expect(session["name"] as? String == "survivor")
        #expect(try await api2.call(.POST, "/api/v1/sessions", body: #"{"name":"survivor","secret":"wrong"}"#).errorCode == "password_denied")
        #expect(try await api2.call(.POST, "/api/v1/sessions", body: #"{"name":"survivor","secret":"keep-me"}"#).status == 200)

        let lastSeen = try #require(before.last?.id)
        let after = try await api2.withEvents(session: id, token: token, since: 0) { log in
            // The test driver forgets its VMs with the process: reconciliation says so on the stream.
            _ = try await log.next("stateChanged") { $0["state"] as? String == "error" }
            return await log.events
        }
        #expect(Array(after.prefix(before.count)).map(\.id) == before.map(\.id))
        #expect(Array(after.prefix(before.count)).map(\.type) == before.map(\.type))
        #expect(after.dropFirst(before.count).allSatisfy { $0.id > lastSeen })

        // A reconnecting EventSource sends Last-Event-ID and gets only what it missed.
        let resumed = try await api2.withEvents(session: id, token: token, lastEventID: lastSeen) { log in
            _ = try await log.next("stateChanged")
            return await log.events
        }
        #expect(resumed.first.map { $0.id > lastSeen } == true)
        #expect(resumed.map(\.id) == after.dropFirst(before.count).map(\.id))
        try await daemon.stop()
    }

    @Test("a Host header that is not the loopback is refused and changes nothing")
    func foreignHostRefused() async throws {
        let directory = try TemporaryDirectory("vms-e2e-host")
        let daemon = DaemonProcess(stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default"])
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let refused = try await api.call(.POST, "/api/v1/sessions", body: #"{"name":"rebound","secret":"x"}"#, headers: [("Host", "evil.example")])
        #expect(refused.status == 403)
        #expect(refused.errorCode == "forbidden_host")
        let info = try await api.call(.GET, "/api/v1", headers: [("Host", "evil.example:\(daemon.port)")])
        #expect(info.status == 403)
        // The name is still free: the refused request created nothing.
        #expect(try await api.call(.POST, "/api/v1/sessions", body: #"{"name":"rebound","secret":"y"}"#).status == 201)
        try await daemon.stop()
    }

    @Test("a second daemon on the same state directory refuses to start, saying why")
    func secondDaemonRefused() async throws {
        let directory = try TemporaryDirectory("vms-e2e-lock")
        let first = DaemonProcess(stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default"])
        try await first.start()
        let second = DaemonProcess(stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default"])
        do {
            try await second.start()
            Issue.record("a second daemon started on the same state directory")
        } catch {
            #expect("\(error)".contains("Another vmsessiond is already using the state directory"))
        }
        try await first.stop()
    }
}
