import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing
import VMSessionCore
import VMSessionDaemon
@testable import VMSessionAPI

/// `…/sessions/{id}/guest/{path}` through the daemon's real router and session manager (libvirt's test
/// driver), to a real HTTP server standing in for the guest behind its forward. The real appliance guest is
/// in `EndToEndTests.GuestAPITests` and the browser's view in `Tests/Browser`.
@Suite("Guest API proxy")
struct GuestProxyRoutesTests {
    static let page = "http://127.0.0.1:9"
    static let tight = GuestProxyPolicy(maximumRequestBytes: 1024, timeout: .seconds(1), concurrentPerSession: 2)

    /// A session whose (test-driver) VM runs with its forward on `port`, and whose guest API answered.
    static func runningSession(_ client: any TestClientProtocol, _ fixture: APIFixture) async throws -> (id: String, token: String) {
        let (id, token) = try await client.newSession()
        let base = "/api/v1/sessions/\(id)"
        #expect(try await client.call(.post, base + "/open", token: token, body: #"{"memory":128,"disk":64}"#).status == .accepted)
        #expect(try await client.settled(id, token: token)["state"] as? String == "open")
        #expect(try await client.call(.post, base + "/start", token: token).status == .accepted)
        #expect(try await client.settled(id, token: token)["state"] as? String == "running")
        await fixture.manager.setGuestAPI(try #require(SessionID(id)), available: true, reason: "the stand-in answers")
        return (id, token)
    }

    static func text(
        _ client: any TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, headers: HTTPFields = [:], body: String? = nil
    ) async throws -> (status: HTTPResponse.Status, headers: HTTPFields, body: String) {
        try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) { response in
            (response.status, response.headers, String(buffer: response.body))
        }
    }

    static func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }

    @Test("a GET reaches the guest with the session's token; the guest's CORS answer, cookies and hop-by-hop headers stay behind")
    func getReachesGuest() async throws {
        try await StandInGuest.run { guest, port in
            try await APIFixture.run(apiPort: { port }) { client, fixture in
                let (id, token) = try await Self.runningSession(client, fixture)
                let reply = try await Self.text(client, .get, "/api/v1/sessions/\(id)/guest/hello", headers: Self.bearer(token))
                #expect(reply.status == .ok)
                #expect(reply.body == "hello from the guest")
                #expect(reply.headers[.init("X-Guest")!] == "yes")
                #expect(reply.headers[.setCookie] == nil, "a guest's cookie would land on the daemon's origin")
                #expect(reply.headers[.accessControlAllowOrigin] == nil, "the daemon decides CORS, not the guest")
                #expect(reply.headers[.accessControlAllowCredentials] == nil)
                #expect(reply.headers[.init("Keep-Alive")!] == nil)
                #expect(guest.served == 1)
                // The guest's root, with or without the slash, is its `/`.
                for (root, target) in [("guest", "/"), ("guest/", "/"), ("guest?x=1", "/?x=1"), ("guest/?x=1", "/?x=1")] {
                    let reply = try await Self.text(client, .get, "/api/v1/sessions/\(id)/\(root)", headers: Self.bearer(token))
                    #expect(reply.status == .ok, "\(root)")
                    #expect(reply.body == "root \(target)", "\(root)")
                }
            }
        }
    }

    @Test("the guest never sees the session's token (header or ?token=); the rest of the query and the page's own headers pass")
    func tokenWithheldFromGuest() async throws {
        try await StandInGuest.run { _, port in
            try await APIFixture.run(apiPort: { port }) { client, fixture in
                let (id, token) = try await Self.runningSession(client, fixture)
                let byQuery = try await client.call(.get, "/api/v1/sessions/\(id)/guest/headers?a=1&token=\(token)&b=%2F")
                #expect(byQuery.status == .ok)
                #expect(byQuery["target"] as? String == "/headers?a=1&b=%2F")
                let byHeader = try await client.call(
                    .get, "/api/v1/sessions/\(id)/guest/headers", token: token, extraHeaders: [.init("X-Page")!: "kept"])
                #expect(byHeader["target"] as? String == "/headers")
                #expect(byHeader["x-page"] as? String == "kept")
                #expect(byHeader.json.keys.contains { $0.lowercased() == "authorization" } == false, "\(byHeader.json)")
            }
        }
    }

    @Test("a body goes to the guest and comes back, for POST, PUT, PATCH and DELETE")
    func bodyBothWays() async throws {
        try await StandInGuest.run { _, port in
            try await APIFixture.run(apiPort: { port }) { client, fixture in
                let (id, token) = try await Self.runningSession(client, fixture)
                for method in [HTTPRequest.Method.post, .put, .patch, .delete] {
                    let body = #"{"method":"\#(method.rawValue)","data":"\#(String(repeating: "x", count: 500))"}"#
                    var headers = Self.bearer(token)
                    headers[.contentLength] = "\(body.utf8.count)"
                    headers[.contentType] = "application/json"
                    let reply = try await Self.text(client, method, "/api/v1/sessions/\(id)/guest/echo", headers: headers, body: body)
                    #expect(reply.status == .ok, "\(method)")
                    #expect(reply.body == body, "\(method)")
                    #expect(reply.headers[.init("X-Method")!] == method.rawValue)
                }
            }
        }
    }

    @Test("a redirect to the guest's own path points back into the proxy, not at the raw forward")
    func redirectRewritten() async throws {
        try await StandInGuest.run { _, port in
            try await APIFixture.run(apiPort: { port }) { client, fixture in
                let (id, token) = try await Self.runningSession(client, fixture)
                let reply = try await Self.text(client, .get, "/api/v1/sessions/\(id)/guest/redirect", headers: Self.bearer(token))
                #expect(reply.status == .found)
                #expect(reply.headers[.location] == "/api/v1/sessions/\(id)/guest/hello")
            }
        }
    }

    @Test("no token is 401, a wrong one 401, another session's 403, an unapproved origin 403; the guest is not asked")
    func refusedBeforeTheGuest() async throws {
        try await StandInGuest.run { guest, port in
            try await APIFixture.run(apiPort: { port }) { client, fixture in
                let (id, token) = try await Self.runningSession(client, fixture)
                let (_, otherToken) = try await client.newSession()
                let path = "/api/v1/sessions/\(id)/guest/hello"
                #expect(try await client.call(.get, path).errorCode == "unauthorized")
                #expect(try await client.call(.get, path, token: "not-a-token").status == .unauthorized)
                #expect(try await client.call(.post, path + "?token=wrong").status == .unauthorized)
                #expect(try await client.call(.get, path, token: otherToken).status == .forbidden)
                let foreign = try await client.call(.get, path, token: token, origin: Self.page)
                #expect(foreign.errorCode == "origin_not_approved")
                #expect(foreign.headers[.accessControlAllowOrigin] == nil)
                #expect(try await client.call(.get, "/api/v1/sessions/\(UUID())/guest/hello", token: token).status == .notFound)
                #expect(guest.served == 0)
            }
        }
    }

    @Test("an approved origin gets the daemon's CORS headers on the guest's answer, and its preflight answered")
    func approvedOriginGetsDaemonCORS() async throws {
        try await StandInGuest.run { _, port in
            try await APIFixture.run(apiPort: { port }) { client, fixture in
                _ = try await client.call(.post, "/api/v1/origins/approve", token: fixture.adminToken, body: #"{"origin":"\#(Self.page)"}"#)
                let (id, token) = try await Self.runningSession(client, fixture)
                let path = "/api/v1/sessions/\(id)/guest/hello"
                let preflight = try await client.call(
                    .options, path, origin: Self.page, extraHeaders: [.accessControlRequestMethod: "PUT"])
                #expect(preflight.status == .noContent)
                #expect(preflight.headers[.accessControlAllowMethods]?.contains("PUT") == true)
                var headers = Self.bearer(token)
                headers[.origin] = Self.page
                let reply = try await Self.text(client, .get, path, headers: headers)
                #expect(reply.status == .ok)
                #expect(reply.headers[.accessControlAllowOrigin] == Self.page, "the daemon's, not the guest's '*'")
                #expect(reply.headers[.accessControlAllowCredentials] == nil)
            }
        }
    }

    @Test("a VM that does not run is 409, a guest API that has not answered yet 503 with Retry-After, and nothing is sent")
    func guestNotUp() async throws {
        try await StandInGuest.run { guest, port in
            try await APIFixture.run(apiPort: { port }) { client, fixture in
                let (id, token) = try await client.newSession()
                let path = "/api/v1/sessions/\(id)/guest/hello"
                let closed = try await client.call(.get, path, token: token)
                #expect(closed.status == .conflict)
                #expect(closed.errorCode == "invalid_state")
                _ = try await client.call(.post, "/api/v1/sessions/\(id)/open", token: token, body: #"{"memory":128,"disk":64}"#)
                _ = try await client.settled(id, token: token)
                _ = try await client.call(.post, "/api/v1/sessions/\(id)/start", token: token)
                #expect(try await client.settled(id, token: token)["state"] as? String == "running")
                let early = try await client.call(.get, path, token: token)
                #expect(early.status == .serviceUnavailable)
                #expect(early.errorCode == "unavailable")
                #expect(early.headers[.retryAfter] != nil)
                await fixture.manager.setGuestAPI(try #require(SessionID(id)), available: true, reason: "answers")
                _ = try await client.call(.post, "/api/v1/sessions/\(id)/pause", token: token)
                #expect(try await client.call(.get, path, token: token).status == .conflict)
                #expect(guest.served == 0)
            }
        }
    }

    @Test("a body declared larger than the limit is 413 and never reaches the guest; a bad Content-Length is 400")
    func oversizedBody() async throws {
        try await StandInGuest.run { guest, port in
            try await APIFixture.run(apiPort: { port }, guestProxy: Self.tight) { client, fixture in
                let (id, token) = try await Self.runningSession(client, fixture)
                var headers = Self.bearer(token)
                headers[.contentLength] = "1025"
                let reply = try await client.call(
                    .post, "/api/v1/sessions/\(id)/guest/echo", body: String(repeating: "y", count: 1025), extraHeaders: headers)
                #expect(reply.status == .contentTooLarge)
                #expect(reply.errorCode == "payload_too_large")
                #expect((reply.error?["message"] as? String ?? "").contains("1024"))
                headers[.contentLength] = "lots"
                #expect(try await client.call(.post, "/api/v1/sessions/\(id)/guest/echo", extraHeaders: headers).status == .badRequest)
                #expect(guest.served == 0)
                headers[.contentLength] = "1024"
                let fits = try await Self.text(
                    client, .post, "/api/v1/sessions/\(id)/guest/echo", headers: headers, body: String(repeating: "y", count: 1024))
                #expect(fits.status == .ok)
                #expect(fits.body.count == 1024)
            }
        }
    }

    @Test("a guest slower than the limit is 504 guest_api_timeout")
    func slowGuestTimesOut() async throws {
        try await StandInGuest.run { _, port in
            try await APIFixture.run(apiPort: { port }, guestProxy: Self.tight) { client, fixture in
                let (id, token) = try await Self.runningSession(client, fixture)
                let started = ContinuousClock.now
                let reply = try await client.call(.get, "/api/v1/sessions/\(id)/guest/slow", token: token)
                #expect(reply.status == .gatewayTimeout)
                #expect(reply.errorCode == "guest_api_timeout")
                #expect(ContinuousClock.now - started < .seconds(30), "cut at the limit, not at the guest's minute")
            }
        }
    }

    @Test("a guest that closes the connection unanswered is 502 guest_api_failed")
    func brokenConnectionIsBadGateway() async throws {
        let breaker = try ConnectionBreaker()
        defer { breaker.stop() }
        try await APIFixture.run(apiPort: { breaker.port }) { client, fixture in
            let (id, token) = try await Self.runningSession(client, fixture)
            let reply = try await client.call(.get, "/api/v1/sessions/\(id)/guest/anything", token: token)
            #expect(reply.status == .badGateway)
            #expect(reply.errorCode == "guest_api_failed")
        }
    }

    @Test("past the per-session limit of requests in flight a request is 429 with Retry-After; slots come back when requests end")
    func concurrencyLimited() async throws {
        try await StandInGuest.run { guest, port in
            try await APIFixture.run(apiPort: { port }, guestProxy: GuestProxyPolicy(maximumRequestBytes: 1024, timeout: .seconds(30), concurrentPerSession: 2)) {
                client, fixture in
                let (id, token) = try await Self.runningSession(client, fixture)
                let path = "/api/v1/sessions/\(id)/guest/hold"
                try await withThrowingTaskGroup(of: String.self) { group in
                    for _ in 0..<2 {
                        group.addTask { try await Self.text(client, .get, path, headers: Self.bearer(token)).body }
                    }
                    for _ in 0..<400 where guest.served < 2 { try await Task.sleep(for: .milliseconds(10)) }
                    #expect(guest.served == 2)
                    let third = try await client.call(.get, path, token: token)
                    #expect(third.status == .tooManyRequests)
                    #expect(third.errorCode == "too_many_requests")
                    #expect(third.headers[.retryAfter] == "1")
                    guest.release()
                    for try await body in group { #expect(body == "held") }
                }
                #expect(guest.served == 2, "the refused one never reached the guest")
                for _ in 0..<3 {
                    #expect(try await Self.text(client, .get, "/api/v1/sessions/\(id)/guest/hello", headers: Self.bearer(token)).status == .ok)
                }
            }
        }
    }

    @Test("a body without a declared length (chunked) is cut off with payload_too_large once it passes the limit")
    func streamedBodyBounded() async throws {
        let (chunks, continuation) = AsyncStream.makeStream(of: ByteBuffer.self)
        for _ in 0..<3 { continuation.yield(ByteBuffer(repeating: 0x61, count: 400)) }
        continuation.finish()
        var passed = 0
        let error = await #expect(throws: VMSessionError.self) {
            for try await chunk in BoundedBody(base: chunks, policy: Self.tight) { passed += chunk.readableBytes }
        }
        #expect(error?.code == .payloadTooLarge)
        #expect(passed == 800, "what fit was passed on; the chunk that crossed 1024 bytes was not")
        let (small, done) = AsyncStream.makeStream(of: ByteBuffer.self)
        done.yield(ByteBuffer(repeating: 0x62, count: 1024))
        done.finish()
        var total = 0
        for try await chunk in BoundedBody(base: small, policy: Self.tight) { total += chunk.readableBytes }
        #expect(total == 1024, "exactly the limit passes")
    }
}
