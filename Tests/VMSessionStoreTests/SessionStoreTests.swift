import Foundation
import Testing
import VMSessionCore
import VMSessionStore
import VMSessionTestSupport

@Suite("Session store")
struct SessionStoreTests {
    static func newSession(_ name: String = "demo") -> StoredSession {
        let now = Date()
        return StoredSession(
            session: Session(id: SessionID(), name: name, createdAt: now, updatedAt: now),
            secret: SecretDigest(kdf: "scrypt:16384:8:1", salt: [1, 2, 3], hash: [4, 5, 6]))
    }

    @Test("migrations are the Schema/sqlite files, applied in file-name order")
    func migrationsApplied() throws {
        let store = try SessionStore.inMemory()
        let applied = try store.appliedMigrations()
        #expect(applied.first == "0001_initial")
        #expect(applied == applied.sorted())
    }

    @Test("a session, its token and its events survive closing and reopening the database file")
    func sessionSurvivesReopen() throws {
        let directory = try TemporaryDirectory("vms-store")
        let path = directory.path + "/db.sqlite"
        let stored = Self.newSession()
        var written: [SessionEvent] = []
        do {
            let store = try SessionStore(path: path)
            written.append(try store.createSession(stored, tokenHash: [9, 9], event: (.sessionCreated, #"{"name":"demo"}"#)))
            var changed = stored
            changed.session.state = .opening
            changed.pendingAction = .open
            written += try store.update(changed, events: [(.stateChanged, #"{"state":"opening"}"#), (.progress, "{}")])
        }
        let reopened = try SessionStore(path: path)
        let loaded = try #require(try reopened.session(stored.session.id))
        #expect(loaded.session.state == .opening)
        #expect(loaded.pendingAction == .open)
        #expect(loaded.secret == stored.secret)
        #expect(try reopened.allTokens().contains { $0.hash == [9, 9] && $0.session == stored.session.id })
        // Times are kept to the millisecond; everything else comes back exactly.
        let replayed = try reopened.events(for: stored.session.id, after: 0)
        #expect(replayed.map(\.id) == written.map(\.id))
        #expect(replayed.map(\.kind) == written.map(\.kind))
        #expect(replayed.map(\.payload) == written.map(\.payload))
        #expect(zip(replayed, written).allSatisfy { abs($0.time.timeIntervalSince($1.time)) < 0.002 })
        #expect(FileManager.default.fileExists(atPath: path + "-wal"), "the database runs in WAL mode")
    }

    @Test("event ids only grow, also across sessions, and replay starts after the given id")
    func eventIdsAreMonotonic() throws {
        let store = try SessionStore.inMemory()
        let a = Self.newSession("a")
        let b = Self.newSession("b")
        _ = try store.createSession(a, tokenHash: [1], event: (.sessionCreated, "{}"))
        _ = try store.createSession(b, tokenHash: [2], event: (.sessionCreated, "{}"))
        var ids: [Int64] = []
        for index in 0..<20 {
            ids.append(try store.append(.progress, payload: "{}", for: index.isMultiple(of: 2) ? a.session.id : b.session.id, at: Date()).id)
        }
        #expect(ids == ids.sorted() && Set(ids).count == ids.count)
        let afterTenth = try store.events(for: nil, after: ids[9])
        #expect(afterTenth.map(\.id) == Array(ids[10...]))
        #expect(try store.events(for: a.session.id, after: 0).allSatisfy { $0.sessionID == a.session.id })
    }

    @Test("a second session with a taken name is refused and the first is untouched")
    func duplicateNameRefused() throws {
        let store = try SessionStore.inMemory()
        let first = Self.newSession("taken")
        _ = try store.createSession(first, tokenHash: [1], event: (.sessionCreated, "{}"))
        #expect(throws: VMSessionError.self) {
            _ = try store.createSession(Self.newSession("taken"), tokenHash: [2], event: (.sessionCreated, "{}"))
        }
        #expect(try store.allSessions().map(\.session.id) == [first.session.id])
        #expect(try store.allTokens().contains { $0.hash == [2] } == false)
    }

    @Test("operations keep their progress and error")
    func operationsRoundTrip() throws {
        let store = try SessionStore.inMemory()
        let stored = Self.newSession()
        _ = try store.createSession(stored, tokenHash: [1], event: (.sessionCreated, "{}"))
        var operation = SessionOperation(sessionID: stored.session.id, action: .open, createdAt: Date(), updatedAt: Date())
        operation.progress = .init(done: 2, total: 3, message: "defining")
        operation.status = .failed
        operation.error = .init(VMSessionError(.creationFailed, "no disk"))
        try store.save(operation)
        let loaded = try #require(try store.operation(operation.id))
        #expect(loaded.progress == operation.progress)
        #expect(loaded.error == operation.error)
        #expect(loaded.status == .failed)
    }
}
