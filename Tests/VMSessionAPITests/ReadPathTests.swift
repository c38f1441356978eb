import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
import VMSessionCore
import VMSessionDaemon

@testable import VMSessionAPI

/// The read routes answer from what the daemon holds (the manager's read model) with JSON encoded once per
/// change: a revoked token is refused by the very next request, and a change is in the very next answer.
@Suite("Read path")
struct ReadPathTests {
    @Test("a session's view is encoded once per change, not per request")
    func encodedOncePerChange() throws {
        let views = EncodedViews()
        let address = DaemonAddress()
        let now = Date()
        var session = Session(id: SessionID(), name: "cached", createdAt: now, updatedAt: now)
        let first = views.session(session, apiAvailable: false, address: address)
        for _ in 0..<100 { #expect(views.session(session, apiAvailable: false, address: address) == first) }
        #expect(views.encodeCount == 1)
        session.daemon.controlled = true
        let changed = views.session(session, apiAvailable: false, address: address)
        #expect(views.encodeCount == 2)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(changed.readableBytesView)) as? [String: Any])
        #expect(json["daemonControlled"] as? Bool == true)
        #expect(views.session(session, apiAvailable: false, address: address) == changed)
        // What the daemon holds beside the session (whether its guest API answers) is part of the view too.
        _ = views.session(session, apiAvailable: true, address: address)
        #expect(views.encodeCount == 3)
        // The list: once per generation of the read model.
        var made = 0
        for _ in 0..<10 {
            _ = views.list(generation: 7) {
                made += 1
                return (["sessions": [String]()], Set<SessionID>())
            }
        }
        #expect(made == 1)
        _ = views.list(generation: 8) {
            made += 1
            return (["sessions": [String]()], Set<SessionID>())
        }
        #expect(made == 2)
    }

    @Test("the bearer token is read in any case of the scheme, without the blanks around it, and only from Bearer")
    func bearerParsing() {
        #expect(SessionsController.bearer("Bearer abc-123") == "abc-123")
        #expect(SessionsController.bearer("bEaReR \t abc  ") == "abc")
        #expect(SessionsController.bearer("Bearer ") == "")
        #expect(SessionsController.bearer("Basic abc") == nil)
        #expect(SessionsController.bearer("Bearerabc") == nil)
        #expect(SessionsController.bearer("Bear") == nil)
    }

    @Test("a revoked token is refused by the next GET, and the session's other routes with it")
    func revokedTokenRefusedAtOnce() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            #expect(try await client.call(.get, "/api/v1/sessions/\(id)", token: token).status == .ok)
            #expect(try await client.call(.delete, "/api/v1/sessions/\(id)/token", token: token).status == .noContent)
            let refused = try await client.call(.get, "/api/v1/sessions/\(id)", token: token)
            #expect(refused.status == .unauthorized)
            #expect(refused.errorCode == "unauthorized")
            #expect(try await client.call(.get, "/api/v1/sessions/\(id)/properties", token: token).status == .unauthorized)
            // The admin still sees it.
            #expect(try await client.call(.get, "/api/v1/sessions/\(id)", token: fixture.adminToken).status == .ok)
        }
    }

    @Test("a change is in the next GET of the session and of the list; unchanged, the same bytes come back")
    func changeSeenAtOnce() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let body = { (token: String) in
                try await client.execute(
                    uri: "/api/v1/sessions/\(id)", method: .get, headers: [.authorization: "Bearer \(token)"]
                ) { Data($0.body.readableBytesView) }
            }
            let before = try await body(token)
            #expect(try await body(token) == before)
            // The admin's view also names the host's URI (a page's does not): encoded once per change too.
            let admin = try await body(fixture.adminToken)
            #expect(try await body(fixture.adminToken) == admin)
            let pageHost = try #require((try JSONSerialization.jsonObject(with: before) as? [String: Any])?["host"] as? [String: Any])
            let adminHost = try #require((try JSONSerialization.jsonObject(with: admin) as? [String: Any])?["host"] as? [String: Any])
            #expect(pageHost["name"] as? String == "local" && pageHost["state"] as? String == "connected" && pageHost["uri"] == nil)
            #expect(adminHost["name"] as? String == "local" && adminHost["uri"] as? String == "test:///default")
            let patch = try await client.call(.patch, "/api/v1/sessions/\(id)/daemon", token: token, body: #"{"controlled":true,"minCap":20,"maxCap":80}"#)
            #expect(patch.status == .ok)
            let after = try await client.call(.get, "/api/v1/sessions/\(id)", token: token)
            #expect(after["daemonControlled"] as? Bool == true)
            #expect(after["daemonMinCap"] as? Int == 20)
            let list = try await client.call(.get, "/api/v1/sessions", token: fixture.adminToken)
            let listed = try #require(list["sessions"] as? [[String: Any]])
            #expect(listed.first { $0["id"] as? String == id }?["daemonMaxCap"] as? Int == 80)
            // A session created after the list was encoded is in the next list.
            let (second, _) = try await client.newSession()
            let again = try #require(try await client.call(.get, "/api/v1/sessions", token: fixture.adminToken)["sessions"] as? [[String: Any]])
            #expect(again.contains { $0["id"] as? String == second })
            // Deleted, it is gone from the next GET.
            #expect(try await client.call(.delete, "/api/v1/sessions/\(id)", token: token).status == .noContent)
            #expect(try await client.call(.get, "/api/v1/sessions/\(id)", token: fixture.adminToken).status == .notFound)
        }
    }

    @Test("an operation is read from the read model while it runs and after it ended, checked against the token")
    func operationRead() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let (_, otherToken) = try await client.newSession()
            let open = try await client.call(.post, "/api/v1/sessions/\(id)/open", token: token, body: #"{"cpus":1,"memory":128,"disk":16}"#)
            #expect(open.status == .accepted)
            let operation = try #require((open["operation"] as? [String: Any])?["id"] as? String)
            _ = try await client.settled(id, token: token)
            let ended = try await client.call(.get, "/api/v1/operations/\(operation)", token: token)
            #expect(ended["status"] as? String == "succeeded")
            #expect(try await client.call(.get, "/api/v1/operations/\(operation)", token: otherToken).status == .forbidden)
            #expect(try await client.call(.get, "/api/v1/operations/\(operation)").status == .unauthorized)
            // Still readable when it is only in the store (a daemon restart): the read model keeps a bounded few.
            let stored = try fixture.store.operation(try #require(OperationID(operation)))
            #expect(stored?.status == .succeeded)
        }
    }
}
