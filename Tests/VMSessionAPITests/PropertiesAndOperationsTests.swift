import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import VMSessionCore

@Suite("Properties and operations")
struct PropertiesAndOperationsTests {
    @Test("guest properties are kept, listed, announced, and validated")
    func properties() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let base = "/api/v1/sessions/\(id)/properties"
            #expect(try await client.call(.get, base + "/host", token: token).status == .notFound)
            let set = try await client.call(.put, base + "/host", token: token, body: #"{"value":"10.110.17.67"}"#)
            #expect(set.status == .ok)
            #expect(try await client.call(.get, base + "/host", token: token)["value"] as? String == "10.110.17.67")
            #expect((try await client.call(.get, base, token: token)["properties"] as? [String: String]) == ["host": "10.110.17.67"])
            let kinds = try fixture.store.events(for: try #require(SessionID(id)), after: 0).map(\.kind)
            #expect(kinds.contains(.propertyChanged))
            #expect(try await client.call(.put, base + "/bad%20name", token: token, body: #"{"value":"x"}"#).status == .badRequest)
            #expect(try await client.call(.put, base + "/host", token: token, body: #"{"value":7}"#).status == .badRequest)
            let huge = String(repeating: "v", count: 5000)
            #expect(try await client.call(.put, base + "/host", token: token, body: #"{"value":"\#(huge)"}"#).status == .contentTooLarge)
            #expect(try await client.call(.get, base + "/host", token: token)["value"] as? String == "10.110.17.67")
        }
    }

    @Test("wait returns the finished operation; cancel says plainly that it cannot")
    func waitAndCancel() async throws {
        try await APIFixture.run { client, _ in
            let (id, token) = try await client.newSession()
            let open = try await client.call(.post, "/api/v1/sessions/\(id)/open", token: token, body: "{}")
            let operation = try #require((open["operation"] as? [String: Any])?["id"] as? String)
            let waited = try await client.call(.get, "/api/v1/operations/\(operation)/wait?timeout=10", token: token)
            #expect(waited["status"] as? String == "succeeded")
            #expect(waited["sessionId"] as? String == id)
            let cancel = try await client.call(.delete, "/api/v1/operations/\(operation)", token: token)
            #expect(cancel.status == .conflict)
            #expect(try await client.call(.get, "/api/v1/operations/\(operation)/wait?timeout=-1", token: token).status == .badRequest)
            let other = try await client.newSession()
            #expect(try await client.call(.get, "/api/v1/operations/\(operation)", token: other.token).status == .forbidden)
        }
    }
}
