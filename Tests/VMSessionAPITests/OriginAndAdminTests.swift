import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import VMSessionCore
import VMSessionTestSupport

@Suite("Origins, CORS and the admin token")
struct OriginAndAdminTests {
    let page = "http://localhost:8123"

    @Test("an unknown origin is refused without CORS headers, changes nothing, and is recorded as pending")
    func unknownOriginRefused() async throws {
        try await APIFixture.run { client, fixture in
            let reply = try await client.call(.post, "/api/v1/sessions", body: #"{"name":"web","secret":"x"}"#, origin: page)
            #expect(reply.status == .forbidden)
            #expect(reply.errorCode == "origin_not_approved")
            #expect(reply.headers[.accessControlAllowOrigin] == nil)
            #expect(try fixture.store.allSessions().isEmpty)
            let origins = try fixture.store.allOrigins()
            #expect(origins.map(\.origin.value) == [page])
            #expect(origins.first?.status == .pending)
        }
    }

    @Test("an approved origin gets CORS headers, its preflights answered (with Private Network Access), and may act")
    func approvedOriginMayAct() async throws {
        try await APIFixture.run { client, fixture in
            let approve = try await client.call(.post, "/api/v1/origins/approve", token: fixture.adminToken, body: #"{"origin":"\#(page)"}"#)
            #expect(approve.status == .ok)
            #expect(approve["status"] as? String == "approved")
            var preflightHeaders = HTTPFields()
            preflightHeaders[.accessControlRequestMethod] = "POST"
            if let name = HTTPField.Name("Access-Control-Request-Private-Network") { preflightHeaders[name] = "true" }
            let preflight = try await client.call(.options, "/api/v1/sessions", origin: page, extraHeaders: preflightHeaders)
            #expect(preflight.status == .noContent)
            #expect(preflight.headers[.accessControlAllowOrigin] == page)
            #expect(preflight.headers[.accessControlAllowHeaders]?.contains("Authorization") == true)
            #expect(preflight.headers[HTTPField.Name("Access-Control-Allow-Private-Network")!] == "true")
            let created = try await client.call(.post, "/api/v1/sessions", body: #"{"name":"web","secret":"x"}"#, origin: page)
            #expect(created.status == .created)
            #expect(created.headers[.accessControlAllowOrigin] == page)
            #expect(created.headers[.vary] == "Origin")
            // Errors carry CORS headers too, so the page can read what went wrong.
            let denied = try await client.call(.post, "/api/v1/sessions", body: #"{"name":"web","secret":"wrong"}"#, origin: page)
            #expect(denied.errorCode == "password_denied")
            #expect(denied.headers[.accessControlAllowOrigin] == page)
        }
    }

    @Test("a denied origin stays refused, and forgetting it makes it pending again on its next request")
    func deniedOrigin() async throws {
        try await APIFixture.run { client, fixture in
            _ = try await client.call(.post, "/api/v1/origins/deny", token: fixture.adminToken, body: #"{"origin":"\#(page)"}"#)
            #expect(try await client.call(.get, "/api/v1", origin: page).errorCode == "origin_not_approved")
            #expect(try fixture.store.allOrigins().first?.status == .denied)
            #expect(try await client.call(.post, "/api/v1/origins/forget", token: fixture.adminToken, body: #"{"origin":"\#(page)"}"#).status == .noContent)
            _ = try await client.call(.get, "/api/v1", origin: page)
            #expect(try fixture.store.allOrigins().first?.status == .pending)
        }
    }

    @Test("the daemon's own page (same origin) needs no approval")
    func sameOriginAllowed() async throws {
        try await APIFixture.run { client, _ in
            // The router test client sends Host: localhost.
            let reply = try await client.call(.get, "/api/v1", origin: "http://localhost")
            #expect(reply.status == .ok)
        }
    }

    @Test("origin and session-list routes need the admin token; a session token is not enough")
    func adminOnly() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            for (method, path, body) in [(HTTPRequest.Method.get, "/api/v1/origins", nil), (.post, "/api/v1/origins/approve", #"{"origin":"http://a.example"}"#), (.get, "/api/v1/sessions", nil)] {
                #expect(try await client.call(method, path, body: body).status == .unauthorized, "\(path)")
                #expect(try await client.call(method, path, token: token, body: body).status == .forbidden, "\(path)")
            }
            let list = try await client.call(.get, "/api/v1/sessions", token: fixture.adminToken)
            #expect((list["sessions"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [id])
            // The admin token opens every session.
            #expect(try await client.call(.get, "/api/v1/sessions/\(id)", token: fixture.adminToken).status == .ok)
            let bad = try await client.call(.post, "/api/v1/origins/approve", token: fixture.adminToken, body: #"{"origin":"evil"}"#)
            #expect(bad.status == .badRequest)
            #expect(try fixture.store.allOrigins().isEmpty)
        }
    }

    @Test("repeated wrong secrets are refused with too_many_attempts and Retry-After, even with the right one")
    func wrongSecretsLock() async throws {
        // The lock lasts a second from the second wrong secret: on the manager's manual clock, so that it holds
        // however slowly a loaded machine gets the third request there, and ends when the test moves time on.
        let clock = ManualClock()
        try await APIFixture.run(clock: clock) { client, _ in
            _ = try await client.newSession("locked", secret: "right")
            #expect(try await client.call(.post, "/api/v1/sessions", body: #"{"name":"locked","secret":"a"}"#).errorCode == "password_denied")
            #expect(try await client.call(.post, "/api/v1/sessions", body: #"{"name":"locked","secret":"b"}"#).errorCode == "password_denied")
            let locked = try await client.call(.post, "/api/v1/sessions", body: #"{"name":"locked","secret":"right"}"#)
            #expect(locked.status == .tooManyRequests)
            #expect(locked.errorCode == "too_many_attempts")
            #expect(locked.headers[.retryAfter] != nil)
            #expect((locked.error?["retryAfter"] as? Int ?? 0) >= 1)
            clock.advance(by: .milliseconds(999))
            #expect(try await client.call(.post, "/api/v1/sessions", body: #"{"name":"locked","secret":"right"}"#).status == .tooManyRequests)
            clock.advance(by: .milliseconds(1))
            #expect(try await client.call(.post, "/api/v1/sessions", body: #"{"name":"locked","secret":"right"}"#).status == .ok)
        }
    }

    @Test("a revoked token no longer opens its session; the session's other tokens still do")
    func tokenRevocation() async throws {
        try await APIFixture.run { client, _ in
            let (id, first) = try await client.newSession("revoke", secret: "s")
            let second = try #require(try await client.call(.post, "/api/v1/sessions", body: #"{"name":"revoke","secret":"s"}"#)["token"] as? String)
            #expect(try await client.call(.delete, "/api/v1/sessions/\(id)/token", token: first).status == .noContent)
            #expect(try await client.call(.get, "/api/v1/sessions/\(id)", token: first).status == .unauthorized)
            #expect(try await client.call(.get, "/api/v1/sessions/\(id)", token: second).status == .ok)
        }
    }
}
