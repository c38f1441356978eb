import Foundation
import Testing
import VMSessionCore
import VMSessionStore

/// Snapshot records: kept with their status, and gone with their session (closed or deleted).
@Suite("Snapshot records")
struct SnapshotStoreTests {
    static func session(_ store: SessionStore, state: SessionState = .running) throws -> StoredSession {
        let now = Date()
        var stored = StoredSession(
            session: Session(id: SessionID(), name: "snap-\(UUID().uuidString.prefix(8))", createdAt: now, updatedAt: now),
            secret: SecretDigest(kdf: "scrypt:1024:8:1", salt: [1], hash: [2]), client: "https://app.example")
        _ = try store.createSession(stored, tokenHash: Array(UUID().uuidString.utf8), event: (.sessionCreated, "{}"))
        stored.session.state = state
        try store.update(stored)
        return stored
    }

    static func snapshot(_ name: String, of stored: StoredSession, status: StoredSnapshot.Status = .ready) -> StoredSnapshot {
        StoredSnapshot(
            session: stored.session.id, client: stored.client,
            snapshot: VMSnapshot(name: name, createdAt: Date(), state: .paused, bytes: 42 << 20), status: status)
    }

    @Test("a snapshot reads back as it was saved, with its events in the same transaction")
    func roundTrip() throws {
        let store = try SessionStore.inMemory()
        let stored = try Self.session(store)
        let first = Self.snapshot("first", of: stored, status: .creating)
        try store.save(first)
        var ready = first
        ready.status = .ready
        let events = try store.save(ready, events: [(.snapshotCreated, #"{"name":"first"}"#)])
        #expect(events.map(\.kind) == [.snapshotCreated])
        let read = try store.snapshots(of: stored.session.id)
        #expect(read.count == 1)
        #expect(read.first?.status == .ready && read.first?.client == "https://app.example")
        #expect(read.first?.snapshot.name == "first" && read.first?.snapshot.state == .paused && read.first?.snapshot.bytes == 42 << 20)
        try store.deleteSnapshot("first", of: stored.session.id, events: [(.snapshotDeleted, #"{"name":"first"}"#)])
        #expect(try store.snapshots(of: stored.session.id).isEmpty)
    }

    @Test("closing a session drops its snapshots, and only its own; deleting a session drops them too")
    func goneWithTheSession() throws {
        let store = try SessionStore.inMemory()
        var closing = try Self.session(store)
        let other = try Self.session(store)
        let deleted = try Self.session(store)
        try store.save(Self.snapshot("a", of: closing))
        try store.save(Self.snapshot("b", of: closing, status: .deleting))
        try store.save(Self.snapshot("a", of: other))
        try store.save(Self.snapshot("c", of: deleted))
        closing.session.state = .paused
        try store.update(closing)
        #expect(try store.snapshots(of: closing.session.id).count == 2, "another state change keeps them")
        closing.session.state = .closed
        try store.update(closing)
        #expect(try store.snapshots(of: closing.session.id).isEmpty)
        #expect(try store.snapshots(of: other.session.id).map(\.snapshot.name) == ["a"])
        var gone = deleted
        gone.session.state = .closed
        try store.update(gone)
        try store.save(Self.snapshot("late", of: gone))  // as a row written after the close would be
        #expect(try store.deleteSession(gone.session.id))
        #expect(try store.snapshots(of: nil).map(\.snapshot.name) == ["a"])
    }
}
