import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import VMSessionCore
import VMSessionStore
import VMSessionTestSupport

/// The snapshot routes over the real manager and store, with a scripted hypervisor (libvirt's test driver
/// keeps no VM memory): what is refused, that a refusal changes nothing, and what a success records.
@Suite("Snapshot routes")
struct SnapshotRoutesTests {
    /// A running session of a fresh fixture.
    static func running(_ client: some TestClientProtocol) async throws -> (id: String, token: String, base: String) {
        let (id, token) = try await client.newSession()
        let base = "/api/v1/sessions/\(id)"
        #expect(try await client.call(.post, base + "/open", token: token, body: #"{"memory":128,"disk":64,"version":"appliance"}"#).status == .accepted)
        #expect(try await client.settled(id, token: token)["state"] as? String == "open")
        #expect(try await client.call(.post, base + "/start", token: token, body: "{}").status == .accepted)
        #expect(try await client.settled(id, token: token)["state"] as? String == "running")
        return (id, token, base)
    }

    /// Waits for the operation a 202 answered with, and returns it.
    static func finished(_ client: some TestClientProtocol, _ reply: Reply, token: String) async throws -> [String: Any] {
        let operation = try #require(reply["operation"] as? [String: Any])
        let id = try #require(operation["id"] as? String)
        return try await client.call(.get, "/api/v1/operations/\(id)/wait?timeout=10", token: token).json
    }

    static func names(_ client: some TestClientProtocol, _ base: String, token: String) async throws -> [String] {
        let list = try await client.call(.get, base + "/snapshots", token: token)
        return (list["snapshots"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
    }

    @Test("take, list, revert and delete: an operation each (202), the state the snapshot held, events in the store")
    func roundTrip() async throws {
        let hypervisor = ScriptedHypervisor()
        try await APIFixture.run(hypervisor: hypervisor) { client, fixture in
            let (id, token, base) = try await Self.running(client)
            let taken = try await client.call(.post, base + "/snapshots", token: token, body: #"{"name":"first"}"#)
            #expect(taken.status == .accepted)
            #expect(taken.headers[.location]?.hasPrefix("/api/v1/operations/") == true)
            let operation = try await Self.finished(client, taken, token: token)
            #expect(operation["status"] as? String == "succeeded")
            #expect(operation["action"] as? String == "snapshot")

            let list = try await client.call(.get, base + "/snapshots", token: token)
            let first = try #require((list["snapshots"] as? [[String: Any]])?.first)
            #expect(first["name"] as? String == "first")
            #expect(first["state"] as? String == "running")
            #expect(first["bytes"] as? Int == 64 << 20)
            #expect(first["created"] as? String != nil)

            // Paused, then back to the running snapshot: the session is running again.
            #expect(try await client.call(.post, base + "/pause", token: token).status == .ok)
            let reverted = try await client.call(.post, base + "/snapshots/first/revert", token: token)
            #expect(reverted.status == .accepted)
            #expect(try await Self.finished(client, reverted, token: token)["status"] as? String == "succeeded")
            #expect(try await client.call(.get, base, token: token)["state"] as? String == "running")
            #expect(await hypervisor.machines[SessionID(id)!] == .running)

            // A snapshot of the paused VM brings it back paused.
            #expect(try await client.call(.post, base + "/pause", token: token).status == .ok)
            let pausedOne = try await client.call(.post, base + "/snapshots", token: token, body: #"{"name":"paused-one"}"#)
            #expect(try await Self.finished(client, pausedOne, token: token)["status"] as? String == "succeeded")
            #expect(try await client.call(.post, base + "/resume", token: token).status == .ok)
            let back = try await client.call(.post, base + "/snapshots/paused-one/revert", token: token)
            #expect(try await Self.finished(client, back, token: token)["status"] as? String == "succeeded")
            #expect(try await client.call(.get, base, token: token)["state"] as? String == "paused")

            #expect(try await client.call(.delete, base + "/snapshots/first", token: token).status == .noContent)
            #expect(try await Self.names(client, base, token: token) == ["paused-one"])
            #expect(await hypervisor.snapshots[SessionID(id)!].map { Array($0.keys) } == ["paused-one"])

            let kinds = try fixture.store.events(for: SessionID(id)!, after: 0).map(\.kind)
            #expect(kinds.filter { $0 == .snapshotCreated }.count == 2)
            #expect(kinds.filter { $0 == .snapshotReverted }.count == 2)
            #expect(kinds.filter { $0 == .snapshotDeleted }.count == 1)
        }
    }

    @Test("bad input is refused with a JSON error that says why, and changes nothing")
    func badInputChangesNothing() async throws {
        let hypervisor = ScriptedHypervisor()
        var quota = SessionQuota.defaults
        quota.snapshots.perSession = 1
        try await APIFixture.run(hypervisor: hypervisor, quota: quota) { client, fixture in
            let (id, token, base) = try await Self.running(client)
            let session = try #require(SessionID(id))
            for body in [#"{"name":"../x"}"#, #"{"name":""}"#, #"{"name":"a b"}"#, #"{}"#, #"{"name":"ok","extra":1}"#, "not json"] {
                let refused = try await client.call(.post, base + "/snapshots", token: token, body: body)
                #expect(refused.status == .badRequest, "\(body)")
                #expect(refused.error?["message"] as? String != nil)
            }
            let unknown = try await client.call(.post, base + "/snapshots/nope/revert", token: token)
            #expect(unknown.status == .notFound)
            #expect((unknown.error?["message"] as? String)?.contains("nope") == true)
            #expect(try await client.call(.delete, base + "/snapshots/nope", token: token).status == .notFound)

            let taken = try await client.call(.post, base + "/snapshots", token: token, body: #"{"name":"only"}"#)
            #expect(try await Self.finished(client, taken, token: token)["status"] as? String == "succeeded")
            let again = try await client.call(.post, base + "/snapshots", token: token, body: #"{"name":"only"}"#)
            #expect(again.status == .conflict)
            let tooMany = try await client.call(.post, base + "/snapshots", token: token, body: #"{"name":"second"}"#)
            #expect(tooMany.status.code == 507)
            #expect((tooMany.error?["message"] as? String)?.contains("limits.snapshotsPerSession") == true)

            // Another session's token may not see or touch them.
            let other = try await client.newSession()
            #expect(try await client.call(.get, base + "/snapshots", token: other.token).status == .forbidden)
            #expect(try await client.call(.post, base + "/snapshots/only/revert", token: other.token).status == .forbidden)
            #expect(try await client.call(.get, base + "/snapshots").status == .unauthorized)

            // Not running: hibernated, a snapshot and a revert are refused.
            #expect(try await client.call(.post, base + "/hibernate", token: token).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "saved")
            let notRunning = try await client.call(.post, base + "/snapshots", token: token, body: #"{"name":"later"}"#)
            #expect(notRunning.status == .conflict)
            #expect(notRunning.errorCode == "invalid_state")
            #expect(try await client.call(.post, base + "/snapshots/only/revert", token: token).status == .conflict)

            // Nothing of that reached the hypervisor or the store, and the session is as it was.
            #expect(await hypervisor.callCount(.snapshot) == 1)
            #expect(await hypervisor.callCount(.revert) == 0)
            #expect(await hypervisor.callCount(.deleteSnapshot) == 0)
            #expect(try fixture.store.snapshots(of: session).map(\.snapshot.name) == ["only"])
            #expect(try await client.call(.get, base, token: token)["state"] as? String == "saved")
        }
    }

    @Test("a failed snapshot leaves no record, and the session as it was")
    func failedSnapshotLeavesNothing() async throws {
        let hypervisor = ScriptedHypervisor()
        try await APIFixture.run(hypervisor: hypervisor) { client, fixture in
            let (id, token, base) = try await Self.running(client)
            await hypervisor.failNext(.snapshot, with: VMSessionError(.hypervisorError, "disk full"))
            let taken = try await client.call(.post, base + "/snapshots", token: token, body: #"{"name":"doomed"}"#)
            let operation = try await Self.finished(client, taken, token: token)
            #expect(operation["status"] as? String == "failed")
            #expect(try fixture.store.snapshots(of: SessionID(id)!).isEmpty)
            #expect(try await client.call(.get, base, token: token)["state"] as? String == "running")
        }
    }

    @Test("closing the session removes its snapshots")
    func closeRemovesSnapshots() async throws {
        let hypervisor = ScriptedHypervisor()
        try await APIFixture.run(hypervisor: hypervisor) { client, fixture in
            let (id, token, base) = try await Self.running(client)
            let taken = try await client.call(.post, base + "/snapshots", token: token, body: #"{"name":"gone-soon"}"#)
            _ = try await Self.finished(client, taken, token: token)
            #expect(try await Self.names(client, base, token: token) == ["gone-soon"])
            #expect(try await client.call(.post, base + "/close", token: token).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "closed")
            #expect(try await Self.names(client, base, token: token).isEmpty)
            #expect(try fixture.store.snapshots(of: SessionID(id)!).isEmpty)
            #expect(await hypervisor.snapshots[SessionID(id)!] == nil)
        }
    }
}
