import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing
import VMSessionCore
import VMSessionDaemon
import VMSessionStore

/// The SSE fan-out: every event's frame is encoded once for all subscribers, and a subscriber that does not
/// read is ended, never waited for.
@Suite("Event fan-out")
struct EventFanOutTests {
    static func session(_ name: String) -> StoredSession {
        let now = Date()
        return StoredSession(
            session: Session(id: SessionID(), name: name, createdAt: now, updatedAt: now), secret: .init(kdf: "k", salt: [], hash: []))
    }

    /// The frames of one subscription until `count` of them arrived.
    static func frames(_ subscription: EventHub.FrameSubscription, count: Int) async -> [(id: Int64, frame: ByteBuffer)] {
        var received: [(id: Int64, frame: ByteBuffer)] = []
        for await delivery in subscription.frames {
            if case .frame(let id, let frame) = delivery { received.append((id, frame)) }
            if received.count == count { break }
        }
        return received
    }

    @Test("a thousand subscribers cost one encode per event, and all get the same bytes in id order")
    func encodedOncePerEvent() async throws {
        let store = try SessionStore.inMemory()
        let hub = EventHub(store: store)
        let stored = Self.session("fan")
        _ = try store.createSession(stored, tokenHash: [1], event: (.sessionCreated, "{}"))
        let subscriptions = (0..<1000).map { _ in hub.subscribeFrames(toAny: [stored.session.id], owners: [.daemon]) }
        // An internal reader of plain events costs no frame.
        let plain = hub.subscribe(to: stored.session.id)
        let events = 20
        for index in 0..<events {
            try hub.record { [try store.append(.propertyChanged, payload: #"{"n":\#(index)}"#, for: stored.session.id, at: Date())] }
        }
        #expect(hub.framesEncodedCount == events)
        let first = await Self.frames(subscriptions[0], count: events)
        #expect(first.map(\.id) == first.map(\.id).sorted())
        // Replay builds its frames the same way: the live bytes are the bytes a reconnect would get.
        let replayed = try store.events(for: stored.session.id, after: 0).filter { $0.kind == .propertyChanged }
        #expect(first.map(\.frame) == replayed.map(EventHub.frame))
        for subscription in subscriptions.dropFirst() {
            let received = await Self.frames(subscription, count: events)
            #expect(received.map(\.id) == first.map(\.id))
            #expect(received.map(\.frame) == first.map(\.frame))
        }
        var count = 0
        for await _ in plain {
            count += 1
            if count == events { break }
        }
        #expect(hub.framesEncodedCount == events)
    }

    @Test("a subscriber that does not read is ended when its buffer is full; the others keep receiving")
    func slowSubscriberDropped() async throws {
        let store = try SessionStore.inMemory()
        let hub = EventHub(store: store)
        let stored = Self.session("slow")
        _ = try store.createSession(stored, tokenHash: [1], event: (.sessionCreated, "{}"))
        let slow = hub.subscribeFrames(toAny: nil, owners: [.daemon])
        let fast = hub.subscribeFrames(toAny: nil, owners: [.daemon])
        let total = EventHub.subscriberBuffer + 10
        // The fast one reads each event as it comes; the slow one reads nothing until the end.
        var fastFrames = fast.frames.makeAsyncIterator()
        var fastReceived = 0
        for _ in 0..<total {
            // record never waits for a subscriber: it returns once the events are handed over or queued.
            try hub.record { [try store.append(.progress, payload: "{}", for: stored.session.id, at: Date())] }
            if case .frame = await fastFrames.next() { fastReceived += 1 }
        }
        #expect(fastReceived == total)
        var buffered = 0
        for await delivery in slow.frames {
            if case .frame = delivery { buffered += 1 }
        }
        // It got what fitted, then its stream ended (it reconnects with its last id and replays the rest).
        #expect(buffered == EventHub.subscriberBuffer)
        for _ in 0..<100 where hub.subscriberCount > 1 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(hub.subscriberCount == 1)
        _ = fast
    }

    @Test("heartbeats go into the subscription's own queue, behind the frames already there")
    func heartbeatInQueue() async throws {
        let store = try SessionStore.inMemory()
        let hub = EventHub(store: store)
        let stored = Self.session("beat")
        _ = try store.createSession(stored, tokenHash: [1], event: (.sessionCreated, "{}"))
        let subscription = hub.subscribeFrames(toAny: nil, owners: [.daemon])
        try hub.record { [try store.append(.progress, payload: "{}", for: stored.session.id, at: Date())] }
        subscription.heartbeat()
        var iterator = subscription.frames.makeAsyncIterator()
        guard case .frame = await iterator.next() else { Issue.record("the frame did not come first"); return }
        guard case .heartbeat = await iterator.next() else { Issue.record("the heartbeat did not follow"); return }
    }

    @Test("an ended subscription yields what was queued, then ends, and leaves the hub")
    func endDrainsThenFinishes() async throws {
        let store = try SessionStore.inMemory()
        let hub = EventHub(store: store)
        let stored = Self.session("end")
        _ = try store.createSession(stored, tokenHash: [1], event: (.sessionCreated, "{}"))
        let subscription = hub.subscribeFrames(toAny: nil, owners: [.daemon])
        let queued = try hub.record { [try store.append(.progress, payload: "{}", for: stored.session.id, at: Date())] }
        subscription.end()
        // Recorded after the end: never delivered to it.
        try hub.record { [try store.append(.progress, payload: "{}", for: stored.session.id, at: Date())] }
        var ids: [Int64] = []
        for await delivery in subscription.frames {
            if case .frame(let id, _) = delivery { ids.append(id) }
        }
        #expect(ids == queued.map(\.id))
        #expect(hub.subscriberCount == 0)
    }

    /// A loop subscriber that records, under a lock, what the hub gave it and whether it was on its own loop.
    final class Recorder: EventHub.LoopSubscriber, Sendable {
        struct Seen {
            var batches: [[Int64]] = []
            var bytes: [ByteBuffer] = []
            var ended = 0
            var offLoop = 0
        }

        let loop: any EventLoop
        let refuses: Bool
        let seen = Mutex(Seen())

        init(loop: any EventLoop, refuses: Bool = false) {
            self.loop = loop
            self.refuses = refuses
        }

        func receive(_ frames: [EventHub.LiveFrame], for key: UInt64, sessions: Set<SessionID>?) -> Int? {
            let wanted = frames.filter { sessions?.contains($0.session) ?? true }
            let onLoop = loop.inEventLoop
            seen.withLock { seen in
                seen.batches.append(wanted.map(\.id))
                seen.bytes += wanted.map(\.bytes)
                if !onLoop { seen.offLoop += 1 }
            }
            return refuses ? nil : wanted.count
        }

        func endedByHub(_ key: UInt64) {
            let onLoop = loop.inEventLoop
            seen.withLock { seen in
                seen.ended += 1
                if !onLoop { seen.offLoop += 1 }
            }
        }
    }

    @Test("loop subscribers get each batch on their own loop, once per batch, the same bytes; revoked or refusing, they are forgotten")
    func loopSubscribers() throws {
        let store = try SessionStore.inMemory()
        let hub = EventHub(store: store)
        let (one, two) = (Self.session("one"), Self.session("two"))
        for (index, stored) in [one, two].enumerated() { _ = try store.createSession(stored, tokenHash: [UInt8(index + 1)], event: (.sessionCreated, "{}")) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { try? group.syncShutdownGracefully() }
        let loops = [group.next(), group.next()]
        #expect(loops[0] !== loops[1])
        let base = hub.subscriberCount
        // On each loop: 20 followers of session one on its token, 20 of every session on the admin's.
        var followers: [(recorder: Recorder, key: UInt64, scoped: Bool)] = []
        for loop in loops {
            for index in 0..<40 {
                let recorder = Recorder(loop: loop)
                let scoped = index < 20
                let owner = scoped ? EventHub.Owner(session: one.session.id, tokenHash: [1]) : EventHub.Owner(session: nil, tokenHash: [2])
                let key = try loop.submit { hub.subscribe(on: loop, toAny: scoped ? [one.session.id] : nil, owners: [owner], recorder) }.wait()
                followers.append((recorder, key, scoped))
            }
        }
        #expect(hub.subscriberCount == base + 80)
        func settle() throws { for loop in loops { try loop.submit {}.wait() } }
        let first = try hub.record { [try store.append(.progress, payload: "{}", for: one.session.id, at: Date())] }
        let second = try hub.record {
            [try store.append(.progress, payload: "{}", for: one.session.id, at: Date()),
             try store.append(.progress, payload: "{}", for: two.session.id, at: Date())]
        }
        try settle()
        #expect(hub.framesEncodedCount == 3)
        let expected = (first + second).map(EventHub.frame)
        for follower in followers {
            let seen = follower.recorder.seen.withLock { $0 }
            #expect(seen.offLoop == 0)
            if follower.scoped {
                #expect(seen.batches == [[first[0].id], [second[0].id]])
                #expect(seen.bytes == [expected[0], expected[1]])
            } else {
                #expect(seen.batches == [[first[0].id], [second[0].id, second[1].id]])
                #expect(seen.bytes == expected)
            }
        }
        // The token of session one revoked: its 40 streams are ended on their loops, the admin's are not.
        #expect(hub.end { $0.tokenHash == [1] } == 40)
        try settle()
        #expect(hub.subscriberCount == base + 40)
        for follower in followers {
            #expect(follower.recorder.seen.withLock { $0.ended } == (follower.scoped ? 1 : 0))
        }
        // One that goes (its connection closed) and one that cannot keep up (it refuses the batch) are forgotten.
        let gone = try #require(followers.first { !$0.scoped })
        hub.unsubscribe(gone.key)
        #expect(hub.subscriberCount == base + 39)
        let refusing = Recorder(loop: loops[1], refuses: true)
        _ = try loops[1].submit { hub.subscribe(on: loops[1], toAny: nil, owners: [.daemon], refusing) }.wait()
        #expect(hub.subscriberCount == base + 40)
        try hub.record { [try store.append(.progress, payload: "{}", for: two.session.id, at: Date())] }
        try settle()
        #expect(hub.subscriberCount == base + 39)
        #expect(refusing.seen.withLock { $0.batches.count } == 1)
        #expect(gone.recorder.seen.withLock { $0.batches.count } == 2)
    }
}
