import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import VMSessionCore

@Suite("Session routes")
struct SessionRoutesTests {
    @Test("GET /api/v1 describes the daemon and its hypervisor")
    func daemonInfo() async throws {
        try await APIFixture.run { client, _ in
            let reply = try await client.call(.get, "/api/v1")
            #expect(reply.status == .ok)
            #expect(reply["name"] as? String == "vmsessiond")
            #expect((reply["hypervisor"] as? [String: Any])?["driver"] as? String == "TEST")
        }
    }

    @Test("the first requester owns a name; the right secret gets a new token, a wrong one password_denied")
    func firstRequesterOwns() async throws {
        try await APIFixture.run { client, _ in
            let created = try await client.call(.post, "/api/v1/sessions", body: #"{"name":"owned","secret":"right"}"#)
            #expect(created.status == .created)
            #expect(created["created"] as? Bool == true)
            let again = try await client.call(.post, "/api/v1/sessions", body: #"{"name":"owned","secret":"right"}"#)
            #expect(again.status == .ok)
            #expect(again["token"] as? String != created["token"] as? String)
            let denied = try await client.call(.post, "/api/v1/sessions", body: #"{"name":"owned","secret":"wrong"}"#)
            #expect(denied.status == .forbidden)
            #expect(denied.errorCode == "password_denied")
            #expect(denied.error?["legacyCode"] as? Int == -20)
            #expect(denied["token"] == nil)
        }
    }

    @Test("only a closed session can be deleted, by its own token; its name is free again afterwards")
    func deleteClosedSession() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession("to-delete", secret: "pw")
            let other = try await client.newSession()
            let base = "/api/v1/sessions/\(id)"
            #expect(try await client.call(.delete, base, token: other.token).status == .forbidden)
            #expect(try await client.call(.post, base + "/open", token: token, body: #"{"memory":128,"disk":64,"version":"appliance"}"#).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "open")
            let refused = try await client.call(.delete, base, token: token)
            #expect(refused.status == .conflict)
            #expect(refused.errorCode == "invalid_state")
            #expect(try await client.call(.get, base, token: token)["state"] as? String == "open", "a refusal changes nothing")
            #expect(try await client.call(.post, base + "/close", token: token).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "closed")

            #expect(try await client.call(.delete, base, token: token).status == .noContent)
            // Its tokens went with it; the admin is told it does not exist.
            #expect(try await client.call(.get, base, token: token).status == .unauthorized)
            #expect(try await client.call(.delete, base, token: fixture.adminToken).status == .notFound)
            // The name is free: a new requester with another secret owns it now.
            let again = try await client.call(.post, "/api/v1/sessions", body: #"{"name":"to-delete","secret":"new"}"#)
            #expect(again.status == .created)
            #expect((again["session"] as? [String: Any])?["id"] as? String != id)
        }
    }

    @Test("a session's routes need its own token")
    func tokensAreScopedToTheirSession() async throws {
        try await APIFixture.run { client, _ in
            let a = try await client.newSession()
            let b = try await client.newSession()
            #expect(try await client.call(.get, "/api/v1/sessions/\(a.id)").status == .unauthorized)
            #expect(try await client.call(.get, "/api/v1/sessions/\(a.id)", token: "forged").status == .unauthorized)
            let crossed = try await client.call(.post, "/api/v1/sessions/\(a.id)/open", token: b.token, body: "{}")
            #expect(crossed.status == .forbidden)
            #expect(try await client.call(.get, "/api/v1/sessions/\(a.id)", token: a.token)["state"] as? String == "closed")
            let viaQuery = try await client.call(.get, "/api/v1/sessions/\(a.id)?token=\(a.token)")
            #expect(viaQuery.status == .ok)
        }
    }

    @Test("open, start, pause, resume, reset, hibernate, restore, stop and close walk the session through its states")
    func fullLifecycle() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let base = "/api/v1/sessions/\(id)"
            let open = try await client.call(.post, base + "/open", token: token, body: #"{"cpus":1,"memory":128,"disk":64,"version":"appliance"}"#)
            #expect(open.status == .accepted)
            let operation = try #require((open["operation"] as? [String: Any])?["id"] as? String)
            #expect(open.headers[.location] == "/api/v1/operations/\(operation)")
            #expect(try await client.settled(id, token: token)["state"] as? String == "open")
            let finished = try await client.call(.get, "/api/v1/operations/\(operation)", token: token)
            #expect(finished["status"] as? String == "succeeded")
            #expect((finished["progress"] as? [String: Any])?["fraction"] as? Double == 1)

            #expect(try await client.call(.post, base + "/start", token: token, body: ##"{"userData":"#!/bin/sh\necho hi"}"##).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "running")
            let paused = try await client.call(.post, base + "/pause", token: token)
            #expect(paused.status == .ok)
            #expect((paused["session"] as? [String: Any])?["state"] as? String == "paused")
            #expect((paused["operation"] as? [String: Any])?["status"] as? String == "succeeded")
            #expect(try await client.call(.post, base + "/resume", token: token).status == .ok)
            #expect(try await client.call(.post, base + "/reset", token: token).status == .ok)
            #expect(try await client.call(.post, base + "/hibernate", token: token).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "saved")
            #expect(try await client.call(.post, base + "/start", token: token).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "running")
            #expect(try await client.call(.post, base + "/stop", token: token).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "open")
            #expect(try await client.call(.post, base + "/close", token: token).status == .accepted)
            let closed = try await client.settled(id, token: token)
            #expect(closed["state"] as? String == "closed")
            #expect(closed["stateCode"] as? Int == 0)
            let sessionID = try #require(SessionID(id))
            let kinds = try fixture.store.events(for: sessionID, after: 0).map(\.kind)
            #expect(kinds.first == .sessionCreated)
            #expect(kinds.filter { $0 == .operationCompleted }.count == 9)
            #expect(!kinds.contains(.operationFailed))
        }
    }

    @Test("an action in the wrong state is refused with invalid_state and changes nothing")
    func wrongStateRefused() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let sessionID = try #require(SessionID(id))
            let eventsBefore = try fixture.store.events(for: sessionID, after: 0).count
            for action in ["start", "pause", "resume", "stop", "hibernate", "reset", "close"] {
                let reply = try await client.call(.post, "/api/v1/sessions/\(id)/\(action)", token: token)
                #expect(reply.status == .conflict, "\(action)")
                #expect(reply.errorCode == "invalid_state")
                #expect(reply.error?["legacyCode"] as? Int == -8)
            }
            #expect(try await client.call(.get, "/api/v1/sessions/\(id)", token: token)["state"] as? String == "closed")
            #expect(try fixture.store.events(for: sessionID, after: 0).count == eventsBefore)
        }
    }

    @Test("the execution cap is kept while the VM is off and refused out of range")
    func executionCap() async throws {
        try await APIFixture.run { client, _ in
            let (id, token) = try await client.newSession()
            let set = try await client.call(.put, "/api/v1/sessions/\(id)/execution-cap", token: token, body: #"{"cap":40}"#)
            #expect(set.status == .ok)
            #expect(set["executionCap"] as? Int == 40)
            for bad in [#"{"cap":0}"#, #"{"cap":101}"#, #"{"cap":"50"}"#, #"{"cap":50,"extra":1}"#, "{}"] {
                let reply = try await client.call(.put, "/api/v1/sessions/\(id)/execution-cap", token: token, body: bad)
                #expect(reply.status == .badRequest, "\(bad)")
                #expect(reply.errorCode == "invalid_argument")
            }
            #expect(try await client.call(.get, "/api/v1/sessions/\(id)", token: token)["executionCap"] as? Int == 40)
        }
    }

    @Test("unknown sessions, operations and routes answer 404 in the JSON error shape")
    func notFound() async throws {
        try await APIFixture.run { client, _ in
            let (_, token) = try await client.newSession()
            for path in ["/api/v1/sessions/\(UUID())", "/api/v1/sessions/not-a-uuid", "/api/v1/operations/\(UUID())", "/api/v1/nothing"] {
                let reply = try await client.call(.get, path, token: token)
                #expect(reply.status == .notFound, "\(path)")
                #expect(reply.errorCode == "not_found", "\(path)")
                let message = reply.error?["message"] as? String ?? ""
                #expect(message.count > 10)
            }
        }
    }
}
