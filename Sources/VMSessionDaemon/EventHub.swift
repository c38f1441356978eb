import Synchronization
import VMSessionCore
import VMSessionStore

/// Records session events in the store and hands them to live subscribers, in id order.
///
/// Writing and fanning out happen under one lock, so every subscriber sees events in the order of their
/// ids; a subscriber that falls too far behind is ended rather than allowed to lose events silently:
/// it reconnects with its last id and replays the rest from the store.
public final class EventHub: Sendable {
    /// How many undelivered events a subscriber may have before it is ended.
    public static let subscriberBuffer = 4096

    private struct Subscriber {
        let sessionID: SessionID?
        let continuation: AsyncStream<SessionEvent>.Continuation
    }

    private let subscribers = Mutex<[UInt64: Subscriber]>([:])
    private let nextSubscriber = Atomic<UInt64>(0)
    public let store: SessionStore

    public init(store: SessionStore) {
        self.store = store
    }

    /// Runs `write` (which stores a change and its events) and delivers the events it returns.
    @discardableResult
    public func record(_ write: () throws -> [SessionEvent]) throws -> [SessionEvent] {
        var overflowed: [AsyncStream<SessionEvent>.Continuation] = []
        let events = try subscribers.withLock { subscribers throws -> [SessionEvent] in
            let events = try write()
            for (key, subscriber) in subscribers {
                for event in events where subscriber.sessionID == nil || subscriber.sessionID == event.sessionID {
                    if case .dropped = subscriber.continuation.yield(event) {
                        overflowed.append(subscriber.continuation)
                        subscribers[key] = nil
                        break
                    }
                }
            }
            return events
        }
        // Finishing runs onTermination, which takes the lock: do it outside.
        for continuation in overflowed { continuation.finish() }
        return events
    }

    /// Live events from now on, for one session or (nil) all.
    public func subscribe(to sessionID: SessionID?) -> AsyncStream<SessionEvent> {
        let key = nextSubscriber.add(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream.makeStream(
            of: SessionEvent.self, bufferingPolicy: .bufferingOldest(Self.subscriberBuffer))
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.removeValue(forKey: key) }
        }
        subscribers.withLock { $0[key] = Subscriber(sessionID: sessionID, continuation: continuation) }
        return stream
    }

    public var subscriberCount: Int { subscribers.withLock { $0.count } }
}
