import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import VMSessionCore

/// Every malformed request gets a 4xx JSON error naming the problem, and nothing changes.
@Suite("Bad input")
struct BadInputTests {
    @Test(
        "malformed session requests are refused with a message naming the problem",
        arguments: [
            ("not json", "not valid JSON"),
            ("[1,2]", "JSON object"),
            ("", "JSON object"),
            (#"{"name":"x"}"#, "'secret' is required"),
            (#"{"secret":"x"}"#, "'name' is required"),
            (#"{"name":1,"secret":"x"}"#, "'name' must be a string"),
            (#"{"name":"x","secret":"y","admin":true}"#, "Unknown field 'admin'"),
            (#"{"name":"<script>","secret":"y"}"#, "'name' must be"),
            (#"{"name":"a;rm -rf /","secret":"y"}"#, "'name' must be"),
            (#"{"name":"$(reboot)","secret":"y"}"#, "'name' must be"),
            (#"{"name":"ok","secret":""}"#, "'secret' must be"),
        ])
    func badSessionRequests(body: String, message: String) async throws {
        try await APIFixture.run { client, fixture in
            let reply = try await client.call(.post, "/api/v1/sessions", body: body)
            #expect(reply.status == .badRequest)
            #expect(reply.errorCode == "invalid_argument")
            #expect((reply.error?["message"] as? String ?? "").contains(message), "\(reply.json)")
            #expect(try fixture.store.allSessions().isEmpty)
        }
    }

    @Test(
        "bad open requirements are refused before anything reaches libvirt",
        arguments: [
            (#"{"cpus":0}"#, 400, "'cpus'"),
            (#"{"cpus":64}"#, 400, "'cpus'"),
            (#"{"memory":1}"#, 400, "'memory'"),
            (#"{"memory":1000000}"#, 400, "'memory'"),
            (#"{"disk":-5}"#, 400, "'disk'"),
            (#"{"disk":99999999}"#, 400, "'disk'"),
            (#"{"cpus":"2"}"#, 400, "'cpus' must be a number"),
            (#"{"cpus":1.5}"#, 400, "'cpus'"),
            (#"{"version":"<domain/>"}"#, 400, "'version'"),
            (#"{"version":"nosuchimage"}"#, 404, "nosuchimage"),
            (#"{"ram":256}"#, 400, "Unknown field 'ram'"),
            (#"{"version":null}"#, 400, "'version' must not be null"),
            (#"{"cpus":null,"memory":512}"#, 400, "'cpus' must not be null"),
            ("{bad", 400, "not valid JSON"),
        ])
    func badOpenRequests(body: String, status: Int, message: String) async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let reply = try await client.call(.post, "/api/v1/sessions/\(id)/open", token: token, body: body)
            #expect(reply.status.code == status)
            #expect((reply.error?["message"] as? String ?? "").contains(message), "\(reply.json)")
            let after = try await client.call(.get, "/api/v1/sessions/\(id)", token: token)
            #expect(after["state"] as? String == "closed")
            #expect(after["cpus"] == nil)
            #expect(!FileManager.default.fileExists(atPath: fixture.directory + "/machines/\(id)"))
        }
    }

    @Test("start refuses unknown fields and oversized user-data, and leaves the session open")
    func badStartRequests() async throws {
        try await APIFixture.run { client, _ in
            let (id, token) = try await client.newSession()
            _ = try await client.call(.post, "/api/v1/sessions/\(id)/open", token: token, body: "{}")
            #expect(try await client.settled(id, token: token)["state"] as? String == "open")
            let unknown = try await client.call(.post, "/api/v1/sessions/\(id)/start", token: token, body: #"{"userdata":"x"}"#)
            #expect(unknown.status == .badRequest)
            let huge = String(repeating: "x", count: (1 << 20) + 1)
            let tooLarge = try await client.call(.post, "/api/v1/sessions/\(id)/start", token: token, body: #"{"userData":"\#(huge)"}"#)
            #expect(tooLarge.status == .contentTooLarge)
            #expect((tooLarge.error?["message"] as? String ?? "").contains("1048576"))
            let body = try await client.call(.post, "/api/v1/sessions/\(id)/pause", token: token, body: #"{"now":true}"#)
            #expect(body.status == .badRequest)
            #expect(try await client.call(.get, "/api/v1/sessions/\(id)", token: token)["state"] as? String == "open")
        }
    }

    @Test("a bad Last-Event-ID is refused")
    func badLastEventID() async throws {
        try await APIFixture.run { client, _ in
            let (id, token) = try await client.newSession()
            let reply = try await client.call(.get, "/api/v1/sessions/\(id)/events?since=-3", token: token)
            #expect(reply.status == .badRequest)
        }
    }

    @Test(
        "a path asked with a method it does not take is 405 with Allow naming the route the router picks; an unknown path is 404",
        arguments: [
            (HTTPRequest.Method.trace, "/api/v1", HTTPResponse.Status.methodNotAllowed, "GET"),
            (.delete, "/api/v1/sessions", .methodNotAllowed, "GET, POST"),
            (.get, "/api/v1/images/pull", .methodNotAllowed, "POST"),
            (.put, "/api/v1/images/some-version", .methodNotAllowed, "DELETE, GET"),
            (.get, "/api/v1/no-such-thing", .notFound, nil),
        ] as [(HTTPRequest.Method, String, HTTPResponse.Status, String?)])
    func wrongMethods(method: HTTPRequest.Method, path: String, status: HTTPResponse.Status, allow: String?) async throws {
        try await APIFixture.run { client, fixture in
            let reply = try await client.call(method, path, token: fixture.adminToken)
            #expect(reply.status == status)
            #expect(reply.errorCode == (allow == nil ? "not_found" : "method_not_allowed"))
            #expect(reply.headers[.allow] == allow)
        }
    }
}
