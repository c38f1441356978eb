import Dispatch
import Foundation
import Synchronization
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

    @Test("subscribers cancelled while events are delivered to them never wedge the hub")
    func cancellationDuringDelivery() async throws {
        let store = try SessionStore.inMemory()
        let hub = EventHub(store: store)
        let now = Date()
        let session = StoredSession(
            session: Session(id: SessionID(), name: "churn", createdAt: now, updatedAt: now), secret: .init(kdf: "k", salt: [], hash: []))
        try hub.record { [try store.createSession(session, tokenHash: [1], event: (.sessionCreated, "{}"))] }
        let id = session.session.id

        // Writers on threads of their own (as the daemon's actors call record), so that a wedged hub shows up
        // as a writer that stops making progress instead of taking the test's cooperative threads with it.
        let written = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let writersDone = DispatchGroup()
        for _ in 0..<2 {
            writersDone.enter()
            Thread.detachNewThread {
                while !stop.load(ordering: .relaxed) {
                    _ = try? hub.record { [try store.append(.progress, payload: "{}", for: id, at: Date())] }
                    written.add(1, ordering: .relaxed)
                }
                writersDone.leave()
            }
        }
        // Subscribers that come and go at random moments, many of them in the middle of a delivery.
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(3)
        var lastCount = 0
        while clock.now < deadline {
            await withTaskGroup { group in
                for _ in 0..<16 {
                    group.addTask { for await _ in hub.subscribe(to: Bool.random() ? id : nil) {} }
                }
                try? await Task.sleep(for: .microseconds(Int.random(in: 0...2000)))
                group.cancelAll()
            }
            let count = written.load(ordering: .relaxed)
            lastCount = count
        }
        stop.store(true, ordering: .relaxed)
        let finished = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: writersDone.wait(timeout: .now() + 10) == .success) }
        }
        #expect(finished, "the writers stopped making progress: the hub is wedged (\(lastCount) events written)")
        #expect(lastCount > 0)
        // Every cancelled subscriber is gone.
        for _ in 0..<200 where hub.subscriberCount > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(hub.subscriberCount == 0)
    }

    @Test("ending a token's subscriptions finishes exactly those streams")
    func endByOwner() async throws {
        let hub = EventHub(store: try SessionStore.inMemory())
        let session = SessionID()
        let revoked = EventHub.Owner(session: session, tokenHash: [1])
        let kept = EventHub.Owner(session: session, tokenHash: [2])
        let admin = EventHub.Owner(session: nil, tokenHash: [3])
        let streams = [hub.subscribe(to: session, owner: revoked), hub.subscribe(to: session, owner: kept), hub.subscribe(to: nil, owner: admin)]
        #expect(hub.end { $0 == revoked } == 1)
        var iterator = streams[0].makeAsyncIterator()
        #expect(await iterator.next() == nil, "the revoked token's stream has ended")
        #expect(hub.subscriberCount == 2)
        // The admin revoking all of a session's tokens ends every stream a token of that session opened.
        #expect(hub.end { $0.session == session } == 1)
        #expect(hub.subscriberCount == 1)
    }

    @Test("one subscription to several sessions gets each of their events once, in id order, and no other's")
    func severalSessionsInOneStream() async throws {
        let store = try SessionStore.inMemory()
        let hub = EventHub(store: store)
        let now = Date()
        let ids = (0..<3).map { _ in SessionID() }
        for (index, id) in ids.enumerated() {
            let stored = StoredSession(session: Session(id: id, name: "s\(index)", createdAt: now, updatedAt: now), secret: .init(kdf: "k", salt: [], hash: []))
            try hub.record { [try store.createSession(stored, tokenHash: [UInt8(index)], event: (.sessionCreated, "{}"))] }
        }
        let owners = [EventHub.Owner(session: ids[0], tokenHash: [0]), EventHub.Owner(session: ids[1], tokenHash: [1])]
        let both = hub.subscribe(toAny: [ids[0], ids[1]], owners: owners)
        for round in 0..<30 { try hub.record { [try store.append(.progress, payload: "{}", for: ids[round % 3], at: Date())] } }
        var received: [SessionEvent] = []
        for await event in both {
            received.append(event)
            if received.count == 20 { break }
        }
        #expect(received.allSatisfy { $0.sessionID != ids[2] })
        #expect(received.map(\.id) == received.map(\.id).sorted() && Set(received.map(\.id)).count == 20)
        // The replay of such a stream reads the same events back from the store.
        let replayed = try store.events(forAny: [ids[0], ids[1]], after: 0).filter { $0.kind == .progress }
        #expect(replayed.map(\.id) == received.map(\.id))
        // Revoking either token ends the whole stream (the page reconnects with the tokens it still has).
        let again = hub.subscribe(toAny: [ids[0], ids[1]], owners: owners)
        #expect(hub.end { $0 == owners[1] } == 2, "both subscriptions stood on that token")
        var iterator = again.makeAsyncIterator()
        #expect(await iterator.next() == nil)
    }
}
