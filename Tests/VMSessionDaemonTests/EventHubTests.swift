import Foundation
import Testing
import VMSessionCore
import VMSessionDaemon
import VMSessionStore

@Suite("Event hub")
struct EventHubTests {
    @Test("subscribers get each recorded event once, in id order, filtered by session")
    func deliveryInOrder() async throws {
        let store = try SessionStore.inMemory()
        let hub = EventHub(store: store)
        let now = Date()
        let a = StoredSession(session: Session(id: SessionID(), name: "a", createdAt: now, updatedAt: now), secret: .init(kdf: "k", salt: [], hash: []))
        let b = StoredSession(session: Session(id: SessionID(), name: "b", createdAt: now, updatedAt: now), secret: .init(kdf: "k", salt: [], hash: []))
        let onlyA = hub.subscribe(to: a.session.id)
        let all = hub.subscribe(to: nil)
        try hub.record { [try store.createSession(a, tokenHash: [1], event: (.sessionCreated, "{}"))] }
        try hub.record { [try store.createSession(b, tokenHash: [2], event: (.sessionCreated, "{}"))] }
        // Concurrent writers: ids and delivery order must still agree.
        await withTaskGroup { group in
            for index in 0..<50 {
                group.addTask {
                    let id = index.isMultiple(of: 2) ? a.session.id : b.session.id
                    _ = try? hub.record { [try store.append(.progress, payload: "{}", for: id, at: Date())] }
                }
            }
        }
        var received: [SessionEvent] = []
        for await event in all {
            received.append(event)
            if received.count == 52 { break }
        }
        #expect(received.map(\.id) == received.map(\.id).sorted())
        #expect(Set(received.map(\.id)).count == 52)
        var fromA: [SessionEvent] = []
        for await event in onlyA {
            fromA.append(event)
            if fromA.count == 26 { break }
        }
        #expect(fromA.allSatisfy { $0.sessionID == a.session.id })
        #expect(fromA.map(\.id) == fromA.map(\.id).sorted())
    }

    @Test("a subscriber that stops listening is removed")
    func unsubscribe() async throws {
        let hub = EventHub(store: try SessionStore.inMemory())
        do {
            let stream = hub.subscribe(to: nil)
            #expect(hub.subscriberCount == 1)
            _ = stream
        }
        // Dropping the stream's last reference ends it.
        for _ in 0..<100 where hub.subscriberCount > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(hub.subscriberCount == 0)
    }
}
