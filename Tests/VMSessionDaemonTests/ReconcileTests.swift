import Foundation
import Logging
import Testing
import VMSessionCore
import VMSessionDaemon
import VMSessionHypervisor
import VMSessionStore
import VMSessionTestSupport

/// Start-up reconciliation: what a daemon finds in its database after a restart is settled against what
/// the hypervisor really has.
@Suite("Reconciliation at start-up")
struct ReconcileTests {
    static func manager(store: SessionStore, directory: String) throws -> SessionManager {
        let hypervisor = try LibvirtHypervisor(
            configuration: .init(uri: "test:///default", stateDirectory: directory, accelerator: .tcg), logger: Logger(label: "test"))
        return SessionManager(
            store: store, events: EventHub(store: store), hypervisor: hypervisor,
            images: ImageStore(
                store: store, catalog: ImageCatalog(applianceDirectory: directory), directory: directory + "/images",
                downloader: ImageDownloader(logger: Logger(label: "test")), logger: Logger(label: "test")),
            logger: Logger(label: "test"))
    }

    static func stored(state: SessionState, pending: SessionAction?, operation: OperationID?) -> StoredSession {
        let now = Date()
        return StoredSession(
            session: Session(id: SessionID(), name: "s-\(UUID().uuidString.prefix(6))", state: state, operationID: operation, createdAt: now, updatedAt: now),
            secret: SecretDigest(kdf: "scrypt:1024:8:1", salt: [1], hash: [2]), pendingAction: pending)
    }

    @Test("an action cut short by a restart fails its operation and leaves the session where the VM is")
    func interruptedActionFails() async throws {
        let scratch = try TemporaryDirectory("vms-rec")
        let directory = scratch.path
        let store = try SessionStore.inMemory()
        let operation = OperationID()
        let starting = Self.stored(state: .starting, pending: .start, operation: operation)
        _ = try store.createSession(starting, tokenHash: [1], event: (.sessionCreated, "{}"))
        try store.save(SessionOperation(id: operation, sessionID: starting.session.id, action: .start, createdAt: Date(), updatedAt: Date()))
        let closing = Self.stored(state: .closing, pending: .close, operation: nil)
        _ = try store.createSession(closing, tokenHash: [2], event: (.sessionCreated, "{}"))

        let manager = try Self.manager(store: store, directory: directory)
        try await manager.reconcile()

        // Its VM is gone (the test driver forgets everything), so start did not get there.
        let afterStart = try await manager.session(starting.session.id)
        #expect(afterStart.state == .error)
        #expect(afterStart.operationID == nil)
        #expect(try store.operation(operation)?.status == .failed)
        #expect(try store.session(starting.session.id)?.pendingAction == nil)
        let kinds = try store.events(for: starting.session.id, after: 0).map(\.kind)
        #expect(kinds.contains(.operationFailed) && kinds.contains(.stateChanged))
        // Close wanted the VM gone, and it is: the close completed.
        #expect(try await manager.session(closing.session.id).state == .closed)
    }

    @Test("a session whose VM vanished while the daemon was down is in error, saying why; a closed one stays closed")
    func vanishedVM() async throws {
        let scratch = try TemporaryDirectory("vms-rec")
        let directory = scratch.path
        let store = try SessionStore.inMemory()
        let running = Self.stored(state: .running, pending: nil, operation: nil)
        let closed = Self.stored(state: .closed, pending: nil, operation: nil)
        _ = try store.createSession(running, tokenHash: [1], event: (.sessionCreated, "{}"))
        _ = try store.createSession(closed, tokenHash: [2], event: (.sessionCreated, "{}"))
        let manager = try Self.manager(store: store, directory: directory)
        try await manager.reconcile()
        let after = try await manager.session(running.session.id)
        #expect(after.state == .error)
        #expect(after.lastError?.contains("no longer exists") == true)
        #expect(try await manager.session(closed.session.id).state == .closed)
        #expect(try store.events(for: closed.session.id, after: 0).count == 1)
    }
}
