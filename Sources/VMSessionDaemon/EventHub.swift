import Foundation
import NIOCore
import Synchronization
import VMSessionCore
import VMSessionMetrics
import VMSessionStore

/// Records session events in the store and hands them to live subscribers, in id order.
///
/// Why it is shaped this way: an `AsyncStream` runs its termination handler under its own lock, and a
/// subscriber may be cancelled (a browser tab closed) at any moment, including while an event is handed
/// to it. If the hub held its lock while yielding, the two locks could be taken in opposite orders and the
/// daemon would wedge for good (it did). So the lock here guards only plain data and is **never held across
/// a `yield`, a `finish` or any other call into a stream**:
///
/// - `record` writes to the store and appends the events to an outbox under the lock, which fixes their order;
/// - whoever finds nobody delivering becomes the deliverer and drains the outbox, taking a snapshot of the
///   subscribers under the lock and yielding to them outside it. Only one deliverer runs at a time, so every
///   subscriber still sees events in id order.
///
/// A subscriber that falls too far behind is ended rather than allowed to lose events silently: it
/// reconnects with its last id and replays the rest from the store. A subscriber can also be ended on
/// purpose (its token was revoked): see ``end(where:)``.
///
/// Event streams over HTTP subscribe to frames (``subscribeFrames(toAny:owners:)``): the deliverer encodes
/// each event's SSE frame once, and the same bytes (one `ByteBuffer` storage) go to every such subscriber,
/// with one hand-over per subscriber (its stream's buffer; its connection's task writes it). A thousand
/// subscribers cost one encode per event, not a thousand, and a slow one never holds the others up: it is
/// ended when its buffer is full.
///
/// Streams served on the event loops (the API's fast path) subscribe as ``LoopSubscriber``s instead: they are
/// grouped by loop, and each batch costs one `execute` per loop, in which every subscriber of the loop writes the
/// same bytes to its channel; no task wakes per event and stream.
public final class EventHub: Sendable {
    /// How many undelivered events a subscriber may have before it is ended.
    public static let subscriberBuffer = 4096

    /// Who a subscription belongs to, so that it can be ended when that access goes away.
    public struct Owner: Hashable, Sendable {
        /// The session whose token opened the stream, or nil for the admin token or an internal reader.
        public var session: SessionID?
        /// The SHA-256 of the token that opened it, or nil for an internal reader.
        public var tokenHash: [UInt8]?

        public init(session: SessionID?, tokenHash: [UInt8]?) {
            self.session = session
            self.tokenHash = tokenHash
        }

        /// An in-process reader (the idle controller): never ended by a revocation.
        public static let daemon = Owner(session: nil, tokenHash: nil)
    }

    /// What a frame subscriber receives: an event's SSE frame (with its id, so that a stream that replayed
    /// from the store skips what it already sent), or a heartbeat that its own timer put in.
    public enum Delivery: Sendable {
        case frame(id: Int64, ByteBuffer)
        case heartbeat
    }

    /// A subscription to SSE frames: the stream, and a way for the connection's timer to add heartbeats to it
    /// (one stream per connection, so that events reach its writer in one hand-over).
    public struct FrameSubscription: Sendable {
        public let frames: AsyncStream<Delivery>
        let continuation: AsyncStream<Delivery>.Continuation

        /// Queues a heartbeat behind the frames already queued (dropped if the buffer is full: the
        /// subscriber is being ended anyway).
        public func heartbeat() { continuation.yield(.heartbeat) }

        /// Ends the subscription: the stream yields what is already queued, then ends.
        public func end() { continuation.finish() }
    }

    private enum Sink {
        case events(AsyncStream<SessionEvent>.Continuation)
        case frames(AsyncStream<Delivery>.Continuation)

        func finish() {
            switch self {
            case .events(let continuation): continuation.finish()
            case .frames(let continuation): continuation.finish()
            }
        }
    }

    /// One live frame as the loop subscribers get it: the event's id and session (to filter on), and its bytes.
    public struct LiveFrame: Sendable {
        public let id: Int64
        public let session: SessionID
        public let bytes: ByteBuffer
        /// The same frame as one HTTP/1.1 chunk (``chunk(_:)``), made once per event for every loop subscriber: a
        /// subscriber that writes below the HTTP encoder sends these bytes as they are.
        public let chunk: ByteBuffer
    }

    /// A subscriber that lives on an event loop: a connection's handler that writes frames to its channel itself.
    ///
    /// Why: handing each frame to each connection's task (``subscribeFrames(toAny:owners:)``) costs a task wake-up
    /// and an async writer hop per event and connection. The hub instead groups these subscribers by loop and
    /// makes **one** `execute` per loop per batch; in it every subscriber of the loop writes the same bytes to its
    /// channel and flushes once. Every method is called on the subscriber's loop.
    public protocol LoopSubscriber: AnyObject {
        /// The frames of one batch for its subscription `key`, in id order (the subscriber filters by `sessions`, the
        /// scope it subscribed with). Returns how many it took, or nil if it could not keep up and ended itself: the
        /// hub then forgets it. A subscriber ignores a key that is no longer its own (a batch may trail its end).
        func receive(_ frames: [LiveFrame], for key: UInt64, sessions: Set<SessionID>?) -> Int?
        /// The hub ended the subscription `key` (its token was revoked); not called after it ended itself.
        func endedByHub(_ key: UInt64)
    }

    /// A loop subscriber as the hub holds it: its loop, and the subscriber, touched only on that loop.
    struct LoopMember: Sendable {
        let key: UInt64
        let loop: any EventLoop
        let subscriber: NIOLoopBound<any LoopSubscriber>
        let sessions: Set<SessionID>?
        let owners: [Owner]

        func endedByHub() { loop.execute { subscriber.value.endedByHub(key) } }
    }

    /// The loop subscribers of one event loop, keyed like every subscriber.
    private struct LoopGroup {
        let loop: any EventLoop
        var members: [UInt64: LoopMember] = [:]
    }

    private struct Subscriber {
        /// The sessions whose events it gets; nil for every session.
        let sessions: Set<SessionID>?
        /// Whose access it stands on: one owner per token that opened it (a page's one stream carries the
        /// token of each session it follows). Ending any of them ends the stream.
        let owners: [Owner]
        let sink: Sink

        func wants(_ event: SessionEvent) -> Bool { sessions?.contains(event.sessionID) ?? true }
    }

    private struct State {
        var subscribers: [UInt64: Subscriber] = [:]
        /// The loop subscribers, by their loop (not in `subscribers`: the deliverer copies that per batch).
        var loops: [ObjectIdentifier: LoopGroup] = [:]
        /// Each loop subscriber's loop, to find its group.
        var loopOf: [UInt64: ObjectIdentifier] = [:]
        var outbox: [SessionEvent] = []
        var delivering = false

        mutating func removeLoopMember(_ key: UInt64) -> LoopMember? {
            guard let loop = loopOf.removeValue(forKey: key) else { return nil }
            return loops[loop]?.members.removeValue(forKey: key)
        }
    }

    private let state = Mutex(State())
    private let nextSubscriber = Atomic<UInt64>(0)
    private let framesEncoded = Atomic<Int>(0)
    public let store: SessionStore
    let metrics: DaemonMetrics

    public init(store: SessionStore, metrics: DaemonMetrics = DaemonMetrics()) {
        self.store = store
        self.metrics = metrics
    }

    /// Runs `write` (which stores a change and its events) and delivers the events it returns.
    ///
    /// The events are queued in id order under the lock (the store write happens there too, so ids and queue
    /// order agree) and delivered outside it. When this returns, the events are either delivered or in the
    /// hands of the deliverer that was already running.
    @discardableResult
    public func record(_ write: () throws -> [SessionEvent]) throws -> [SessionEvent] {
        let (events, shouldDeliver) = try state.withLock { state throws -> ([SessionEvent], Bool) in
            let events = try write()
            guard !events.isEmpty else { return (events, false) }
            state.outbox.append(contentsOf: events)
            guard !state.delivering else { return (events, false) }
            state.delivering = true
            return (events, true)
        }
        metrics.eventsWritten(events)
        if shouldDeliver { deliver() }
        return events
    }

    /// Drains the outbox: takes a batch and a snapshot of the subscribers under the lock, yields outside it.
    private func deliver() {
        while true {
            let next = state.withLock { state -> (batch: [SessionEvent], subscribers: [(UInt64, Subscriber)], loops: [LoopGroup])? in
                guard !state.outbox.isEmpty else {
                    state.delivering = false
                    return nil
                }
                let batch = state.outbox
                state.outbox.removeAll(keepingCapacity: true)
                // The groups are copied on write: taking them costs nothing until a member comes or goes.
                return (batch, Array(state.subscribers), Array(state.loops.values))
            }
            guard let next else { return }
            var overflowed: [UInt64] = []
            var delivered = 0
            // Each event's frame is encoded at most once, when the first frame subscriber wants it.
            var frames = [ByteBuffer?](repeating: nil, count: next.batch.count)
            func frame(_ index: Int) -> ByteBuffer {
                if let frame = frames[index] { return frame }
                let frame = encodeFrame(next.batch[index])
                frames[index] = frame
                return frame
            }
            var chunks = [ByteBuffer?](repeating: nil, count: next.batch.count)
            func chunk(_ index: Int) -> ByteBuffer {
                if let chunk = chunks[index] { return chunk }
                let chunk = Self.chunk(frame(index))
                chunks[index] = chunk
                return chunk
            }
            for group in next.loops where !group.members.isEmpty {
                let wanted = next.batch.indices.filter { index in
                    group.members.values.contains { $0.sessions?.contains(next.batch[index].sessionID) ?? true }
                }
                guard !wanted.isEmpty else { continue }
                let live = wanted.map { LiveFrame(id: next.batch[$0].id, session: next.batch[$0].sessionID, bytes: frame($0), chunk: chunk($0)) }
                let members = group.members
                group.loop.execute { [self] in self.deliver(live, to: members) }
            }
            for (key, subscriber) in next.subscribers {
                for (index, event) in next.batch.enumerated() where subscriber.wants(event) {
                    let result: YieldOutcome
                    switch subscriber.sink {
                    case .events(let continuation):
                        result = YieldOutcome(continuation.yield(event))
                    case .frames(let continuation):
                        result = YieldOutcome(continuation.yield(.frame(id: event.id, frame(index))))
                    }
                    if result == .dropped {
                        overflowed.append(key)
                        break
                    }
                    delivered += 1
                }
            }
            metrics.eventsDelivered(delivered)
            if !overflowed.isEmpty { metrics.subscribersDropped(end(keys: overflowed)) }
        }
    }

    /// On a group's loop: hands one batch to each of its members; forgets those that could not keep up.
    private func deliver(_ frames: [LiveFrame], to members: [UInt64: LoopMember]) {
        var delivered = 0
        var overflowed: [UInt64] = []
        for (key, member) in members {
            if let count = member.subscriber.value.receive(frames, for: key, sessions: member.sessions) {
                delivered += count
            } else {
                overflowed.append(key)
            }
        }
        metrics.eventsDelivered(delivered)
        if !overflowed.isEmpty { metrics.subscribersDropped(remove(keys: overflowed)) }
    }

    /// Live events from now on as SSE frames, of any of `sessions` (nil: all), handed to `subscriber` on `loop` (its
    /// channel's), in one hop per loop per batch (see ``LoopSubscriber``). Call it on `loop`. It ends as
    /// ``subscribe(toAny:owners:)`` does (``LoopSubscriber/endedByHub()``), or when the subscriber calls
    /// ``unsubscribe(_:)`` (its connection closed) or ends itself. Returns the key to unsubscribe with.
    public func subscribe(
        on loop: any EventLoop, toAny sessions: Set<SessionID>?, owners: [Owner], _ subscriber: any LoopSubscriber
    ) -> UInt64 {
        let key = nextSubscriber.add(1, ordering: .relaxed).newValue
        let member = LoopMember(key: key, loop: loop, subscriber: NIOLoopBound(subscriber, eventLoop: loop), sessions: sessions, owners: owners)
        state.withLock { state in
            state.loops[ObjectIdentifier(loop), default: LoopGroup(loop: loop)].members[key] = member
            state.loopOf[key] = ObjectIdentifier(loop)
        }
        return key
    }

    /// Forgets a loop subscription without ending it (its connection is gone, or it ended itself).
    public func unsubscribe(_ key: UInt64) { remove(keys: [key]) }

    /// Removes loop subscribers under the lock without telling them; returns how many there were.
    @discardableResult
    private func remove(keys: [UInt64]) -> Int {
        state.withLock { state in keys.compactMap { state.removeLoopMember($0) }.count }
    }

    /// Live events from now on, for one session or (nil) all, on behalf of `owner`.
    public func subscribe(to sessionID: SessionID?, owner: Owner = .daemon) -> AsyncStream<SessionEvent> {
        subscribe(toAny: sessionID.map { [$0] }, owners: [owner])
    }

    /// Live events from now on, of any of `sessions` (nil: all), in one stream: what a page that follows
    /// several sessions holds instead of one connection per session. Each event is yielded to it once.
    /// It ends when the access of any of `owners` goes (``end(where:)``).
    public func subscribe(toAny sessions: Set<SessionID>?, owners: [Owner]) -> AsyncStream<SessionEvent> {
        let key = nextSubscriber.add(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream.makeStream(
            of: SessionEvent.self, bufferingPolicy: .bufferingOldest(Self.subscriberBuffer))
        // Runs under the stream's own lock: it may take the hub's lock, because the hub never holds its lock
        // while it calls into a stream.
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: key) }
        }
        state.withLock { $0.subscribers[key] = Subscriber(sessions: sessions, owners: owners, sink: .events(continuation)) }
        return stream
    }

    /// Live events from now on, as SSE frames encoded once for every subscriber (see the type's comment), of
    /// any of `sessions` (nil: all). Ends as ``subscribe(toAny:owners:)`` does.
    public func subscribeFrames(toAny sessions: Set<SessionID>?, owners: [Owner]) -> FrameSubscription {
        let key = nextSubscriber.add(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream.makeStream(of: Delivery.self, bufferingPolicy: .bufferingOldest(Self.subscriberBuffer))
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: key) }
        }
        state.withLock { $0.subscribers[key] = Subscriber(sessions: sessions, owners: owners, sink: .frames(continuation)) }
        return FrameSubscription(frames: stream, continuation: continuation)
    }

    /// How many SSE frames the deliverer has encoded (one per event that a frame subscriber wanted).
    public var framesEncodedCount: Int { framesEncoded.load(ordering: .relaxed) }

    private func encodeFrame(_ event: SessionEvent) -> ByteBuffer {
        framesEncoded.add(1, ordering: .relaxed)
        return Self.frame(event)
    }

    /// One SSE frame: `id`, `event` (the event type) and `data` (one line of JSON). Replay uses it too.
    public static func frame(_ event: SessionEvent) -> ByteBuffer {
        // A value-type format style: no formatter object built per event.
        // Milliseconds, as the store keeps them: a replayed event shows the time it was sent with. The
        // formatter truncates, and a millisecond is not exact in binary: half a microsecond keeps it whole.
        let time = event.time.addingTimeInterval(0.000_000_5).formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        let data = #"{"data":\#(event.payload),"eventId":\#(event.id),"sessionId":"\#(event.sessionID)","time":"\#(time)","type":"\#(event.kind.rawValue)"}"#
        return ByteBuffer(string: "id: \(event.id)\nevent: \(event.kind.rawValue)\ndata: \(data)\n\n")
    }

    /// `frame` as one chunk of an HTTP/1.1 chunked body (RFC 9112 §7.1): its length in hex, CRLF, the bytes, CRLF;
    /// what NIO's response encoder writes for a body part, in one buffer.
    public static func chunk(_ frame: ByteBuffer) -> ByteBuffer {
        let size = String(frame.readableBytes, radix: 16)
        var chunk = ByteBuffer()
        chunk.reserveCapacity(size.utf8.count + frame.readableBytes + 4)
        chunk.writeString(size)
        chunk.writeStaticString("\r\n")
        chunk.writeImmutableBuffer(frame)
        chunk.writeStaticString("\r\n")
        return chunk
    }

    private enum YieldOutcome {
        case delivered, dropped

        init<T>(_ result: AsyncStream<T>.Continuation.YieldResult) {
            if case .dropped = result { self = .dropped } else { self = .delivered }
        }
    }

    /// Ends every subscription one of whose owners matches (a revoked token's streams). Returns how many ended.
    @discardableResult
    public func end(where matches: (Owner) -> Bool) -> Int {
        let (keys, members) = state.withLock { state in
            let keys = state.subscribers.filter { $0.value.owners.contains(where: matches) }.map(\.key)
            let loopKeys = state.loops.values.flatMap { group in group.members.filter { $0.value.owners.contains(where: matches) }.map(\.key) }
            return (keys, loopKeys.compactMap { state.removeLoopMember($0) })
        }
        // Told outside the lock, on their loops.
        for member in members { member.endedByHub() }
        return end(keys: keys) + members.count
    }

    /// Removes subscribers under the lock, then finishes their streams outside it.
    @discardableResult
    private func end(keys: [UInt64]) -> Int {
        let removed = state.withLock { state in keys.compactMap { state.subscribers.removeValue(forKey: $0) } }
        for subscriber in removed { subscriber.sink.finish() }
        return removed.count
    }

    public var subscriberCount: Int { state.withLock { $0.subscribers.count + $0.loopOf.count } }
}
