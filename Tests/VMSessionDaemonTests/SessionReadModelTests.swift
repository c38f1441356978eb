import Foundation
import Logging
import Testing
import VMSessionCore
import VMSessionDaemon
import VMSessionHypervisor
import VMSessionStore
import VMSessionTestSupport

/// The read model the request path reads sessions from, and the access registry it checks callers with: the
/// manager publishes every change into them before the change's call returns, so no read after it sees the old state.
@Suite("Session read model")
struct SessionReadModelTests {
    static func withManager(_ body: (SessionManager, EventHub) async throws -> Void) async throws {
        let scratch = try TemporaryDirectory("vms-read")
        let directory = scratch.path
        let store = try SessionStore.inMemory()
        let logger = Logger(label: "test")
        let hypervisor = try LibvirtHypervisor(
            configuration: .init(uri: "test:///default", stateDirectory: directory, accelerator: .tcg), logger: logger)
        var hasher = SecretHasher()
        hasher.rounds = 1 << 10
        let events = EventHub(store: store)
        let manager = SessionManager(
            store: store, events: events, hypervisor: hypervisor,
            images: ImageStore(
                store: store, catalog: ImageCatalog(applianceDirectory: directory), directory: directory + "/images",
                downloader: ImageDownloader(logger: logger), logger: logger),
            hasher: hasher, adminToken: try AdminToken.load(stateDirectory: directory), logger: logger)
        try await manager.reconcile()
        try await body(manager, events)
    }

    @Test("a revoked token is refused by the next check, with no wait")
    func revokedTokenRefusedAtOnce() async throws {
        try await Self.withManager { manager, _ in
            let grant = try await manager.requestSession(name: "reader", secret: "s3cret")
            let other = try await manager.requestSession(name: "reader", secret: "s3cret")
            #expect(try manager.access.caller(token: grant.token) == .session(grant.session.id))
            #expect(try manager.access.authorize(token: other.token, for: grant.session.id) == .session(grant.session.id))
            _ = try await manager.revokeTokens(of: grant.session.id, token: grant.token)
            #expect(throws: VMSessionError.self) { try manager.access.caller(token: grant.token) }
            do throws(VMSessionError) {
                _ = try manager.access.authorize(token: grant.token, for: grant.session.id)
                Issue.record("a revoked token was let through")
            } catch {
                #expect(error.code == .unauthorized)
            }
            // The session's other token is untouched.
            #expect(try manager.access.caller(token: other.token) == .session(grant.session.id))
        }
    }

    @Test("a change is seen by the next read, and a deleted session is gone from it")
    func changesSeenAtOnce() async throws {
        try await Self.withManager { manager, _ in
            let grant = try await manager.requestSession(name: "changing", secret: "s3cret")
            let id = grant.session.id
            let before = manager.readModel.generation
            #expect(try manager.readModel.view(of: id).session.daemon.controlled == false)
            _ = try await manager.updateDaemonControl(on: id, controlled: true, minCap: 10, maxCap: 90, flags: nil)
            let (session, apiAvailable) = try manager.readModel.view(of: id)
            #expect(session.daemon.controlled && session.daemon.minCap == 10 && session.daemon.maxCap == 90)
            #expect(apiAvailable == false)
            #expect(manager.readModel.generation > before)
            #expect(manager.readModel.allSessions().sessions.map(\.id) == [id])
            // A new session is closed (never opened): it can be deleted.
            try await manager.deleteSession(id, token: grant.token)
            #expect(throws: VMSessionError.self) { try manager.readModel.session(id) }
            #expect(throws: VMSessionError.self) { try manager.access.caller(token: grant.token) }
            #expect(manager.readModel.allSessions().sessions.isEmpty)
        }
    }

    @Test("whoever reacts to an event finds the change it announces already readable")
    func publishedBeforeEventsGoOut() async throws {
        try await Self.withManager { manager, events in
            let grant = try await manager.requestSession(name: "ordered", secret: "s3cret")
            let id = grant.session.id
            var stream = events.subscribe(to: id).makeAsyncIterator()
            for round in 1...20 {
                // One change at a time: while its event is looked at, no later change can have been made.
                async let change = manager.updateDaemonControl(on: id, controlled: nil, minCap: round, maxCap: 100, flags: nil)
                var event = await stream.next()
                while let kind = event?.kind, kind != .daemonControlChanged { event = await stream.next() }
                #expect(try manager.readModel.session(id).daemon.minCap == round)
                _ = try await change
            }
        }
    }

    @Test("the admin token is recognised without a session, and a wrong token is not")
    func adminToken() async throws {
        try await Self.withManager { manager, _ in
            #expect(throws: VMSessionError.self) { try manager.access.caller(token: nil) }
            #expect(throws: VMSessionError.self) { try manager.access.caller(token: "not-a-token") }
            let grant = try await manager.requestSession(name: "admin-reads", secret: "s3cret")
            #expect(throws: VMSessionError.self) { try manager.access.authorizeAdmin(token: grant.token) }
        }
    }
}
