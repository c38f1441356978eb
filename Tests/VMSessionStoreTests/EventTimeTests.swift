import Foundation
import Testing
import VMSessionCore
import VMSessionStore

/// An event's time is the same whether it was just recorded (and sent live) or read back for a replay.
@Suite("Event times")
struct EventTimeTests {
    @Test("a stored event reads back with exactly the instant it was recorded with, to the millisecond")
    func replayedTimeEqualsLiveTime() throws {
        let store = try SessionStore.inMemory()
        let now = Date()
        let stored = StoredSession(
            session: Session(id: SessionID(), name: "timed", createdAt: now, updatedAt: now),
            secret: SecretDigest(kdf: "scrypt:1024:8:1", salt: [1], hash: [2]))
        _ = try store.createSession(stored, tokenHash: [9], event: (.sessionCreated, "{}"))
        var live: [SessionEvent] = []
        // Instants just below and above a millisecond and a second boundary, where rounding differs.
        let base = (now.timeIntervalSince1970).rounded(.down)
        for offset in [0.0004, 0.0005, 0.0006, 0.9994, 0.9996, 0.123456, 0.999_999] {
            live.append(try store.append(.propertyChanged, payload: "{}", for: stored.session.id, at: Date(timeIntervalSince1970: base + offset)))
        }
        let replayed = try store.events(for: stored.session.id, after: 0).filter { $0.kind == .propertyChanged }
        #expect(replayed.map(\.time) == live.map(\.time))
        for event in live {
            let milliseconds = event.time.timeIntervalSince1970 * 1000
            #expect(abs(milliseconds - milliseconds.rounded()) < 0.001, "kept to the millisecond")
        }
    }
}
