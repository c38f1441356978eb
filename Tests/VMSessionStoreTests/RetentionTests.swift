import Foundation
import Testing
import VMSessionCore
import VMSessionStore

@Suite("Retention")
struct RetentionTests {
    @Test("events beyond the newest N of a session go, and the watermark says how far")
    func eventsPrunedByCount() throws {
        let store = try SessionStore.inMemory()
        let a = SessionStoreTests.newSession("a")
        let b = SessionStoreTests.newSession("b")
        _ = try store.createSession(a, tokenHash: [1], event: (.sessionCreated, "{}"))
        _ = try store.createSession(b, tokenHash: [2], event: (.sessionCreated, "{}"))
        var aEvents: [SessionEvent] = []
        for _ in 0..<10 { aEvents.append(try store.append(.progress, payload: "{}", for: a.session.id, at: Date())) }
        _ = try store.append(.progress, payload: "{}", for: b.session.id, at: Date())

        let deleted = try store.pruneEvents(keepPerSession: 4, olderThan: .distantPast)
        #expect(deleted == 7, "a keeps its newest 4 of 11; b keeps both of its 2")
        let kept = try store.events(for: a.session.id, after: 0)
        #expect(kept.map(\.id) == aEvents.suffix(4).map(\.id))
        #expect(try store.events(for: b.session.id, after: 0).count == 2)
        #expect(try store.prunedThrough(a.session.id) == aEvents[5].id)
        #expect(try store.prunedThrough(b.session.id) == 0)
        #expect(try store.prunedThrough(nil) == aEvents[5].id)
        // Pruning again with nothing to do changes nothing, and a watermark never goes down.
        #expect(try store.pruneEvents(keepPerSession: 4, olderThan: .distantPast) == 0)
        #expect(try store.prunedThrough(a.session.id) == aEvents[5].id)
    }

    @Test("events older than the cutoff go whatever their number")
    func eventsPrunedByAge() throws {
        let store = try SessionStore.inMemory()
        let a = SessionStoreTests.newSession("a")
        _ = try store.createSession(a, tokenHash: [1], event: (.sessionCreated, "{}"))
        let old = try store.append(.progress, payload: "{}", for: a.session.id, at: Date(timeIntervalSinceNow: -10 * 86_400))
        let recent = try store.append(.progress, payload: "{}", for: a.session.id, at: Date())
        try store.pruneEvents(keepPerSession: 100, olderThan: Date(timeIntervalSinceNow: -86_400))
        let left = try store.events(for: a.session.id, after: 0).map(\.id)
        #expect(!left.contains(old.id))
        #expect(left.contains(recent.id))
    }

    @Test("tokens beyond the newest N of a session are removed and reported")
    func tokensPruned() throws {
        let store = try SessionStore.inMemory()
        let a = SessionStoreTests.newSession("a")
        _ = try store.createSession(a, tokenHash: [0], event: (.sessionCreated, "{}"))
        for index in 1...5 { try store.addToken(hash: [UInt8(index)], for: a.session.id, at: Date(timeIntervalSinceNow: Double(index))) }
        let removed = try store.pruneTokens(keepPerSession: 2)
        #expect(Set(removed.map(\.hash)) == [[0], [1], [2], [3]])
        #expect(removed.allSatisfy { $0.session == a.session.id })
        #expect(Set(try store.allTokens().map(\.hash)) == [[4], [5]])
    }

    @Test("finished operations past their days go; running ones and the one a session points at stay")
    func operationsPruned() throws {
        let store = try SessionStore.inMemory()
        var a = SessionStoreTests.newSession("a")
        _ = try store.createSession(a, tokenHash: [0], event: (.sessionCreated, "{}"))
        let long = Date(timeIntervalSinceNow: -40 * 86_400)
        func operation(_ status: SessionOperation.Status) -> SessionOperation {
            var operation = SessionOperation(
                sessionID: a.session.id, action: .open, progress: .init(done: 1, total: 1, message: "x"), createdAt: long, updatedAt: long)
            operation.status = status
            return operation
        }
        let finished = operation(.succeeded)
        let running = operation(.running)
        let current = operation(.failed)
        for operation in [finished, running, current] { try store.save(operation) }
        a.session.operationID = current.id
        try store.update(a)
        #expect(try store.pruneOperations(finishedBefore: Date(timeIntervalSinceNow: -30 * 86_400)) == 1)
        #expect(try store.operation(finished.id) == nil)
        #expect(try store.operation(running.id) != nil)
        #expect(try store.operation(current.id) != nil)
    }

    @Test("pending origins not seen for their days are forgotten; decided ones stay")
    func originsPruned() throws {
        let store = try SessionStore.inMemory()
        let stale = try #require(WebOrigin("http://stale.example"))
        let fresh = try #require(WebOrigin("http://fresh.example"))
        let approved = try #require(WebOrigin("http://approved.example"))
        let long = Date(timeIntervalSinceNow: -60 * 86_400)
        try store.noteRefused(stale, at: long)
        try store.noteRefused(fresh, at: Date())
        try store.decide(approved, .approved, at: long)
        #expect(try store.prunePendingOrigins(lastSeenBefore: Date(timeIntervalSinceNow: -30 * 86_400)) == 1)
        #expect(Set(try store.allOrigins().map(\.origin)) == [fresh, approved])
    }
}
