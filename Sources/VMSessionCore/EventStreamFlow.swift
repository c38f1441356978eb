/// What one event stream does next, as a value: replay from the store page by page, then live frames without a
/// repeat, then its end. The event loop's stream handler (`EventStreamHandler`) feeds it what happened and performs
/// the actions it returns; it does no I/O itself, so the order of a stream's bytes is tested without sockets.
///
/// The rules are the router's stream's (`EventsController`): live frames are subscribed before the replay and wait
/// while it is written; ids at or below the last one sent are skipped (so nothing is repeated across replay and live);
/// an end asked for during the replay comes after it, and after what waited; a stream that cannot keep up (more than
/// `waitingLimit` live frames waiting for the replay) is closed, never waited for.
public struct EventStreamFlow<Frame: Sendable>: Sendable {
    public enum Phase: Sendable, Equatable {
        /// Its request is being read.
        case starting
        /// Replaying: the next page starts after `cursor`; `reading` while a page is being read.
        case replaying(cursor: Int64, first: Bool, reading: Bool)
        case live
        case ended
    }

    public enum Action: Sendable {
        /// Read the page of the store after `after` (`first`: also ask how far retention pruned).
        case readPage(after: Int64, first: Bool)
        /// Tell the client that events after `after` through `through` are gone (retention).
        case dropped(after: Int64, through: Int64)
        case write([Frame])
        /// The stream is live: start its heartbeat.
        case startHeartbeat
        /// End the response (its last chunk).
        case end
        /// Close the connection: the client could not keep up.
        case close
    }

    public private(set) var phase = Phase.starting
    /// The id of the last event written.
    public private(set) var lastSent: Int64
    private let since: Int64?
    private let pageSize: Int
    private let waitingLimit: Int
    private var waiting: [(id: Int64, frame: Frame)] = []
    private var endAsked = false

    /// A stream that replays after `since` (nil: live only), reading `pageSize` events at a time.
    public init(since: Int64?, pageSize: Int, waitingLimit: Int) {
        self.since = since
        self.pageSize = pageSize
        self.waitingLimit = waitingLimit
        lastSent = since ?? 0
    }

    /// Its request is read: replay, or go live at once.
    public mutating func start() -> [Action] {
        guard case .starting = phase else { return [] }
        if let since {
            phase = .replaying(cursor: since, first: true, reading: true)
            return [.readPage(after: since, first: true)]
        }
        return goLive()
    }

    /// A page of the replay was read (`pruned`: how far retention pruned, on the first page). `writable`: whether
    /// the connection takes more now (else the next page waits for ``writable()``).
    public mutating func pageRead(pruned: Int64?, page: [(id: Int64, frame: Frame)], writable: Bool) -> [Action] {
        guard case .replaying(let cursor, _, true) = phase else { return [] }
        var actions: [Action] = []
        if let pruned, let since, since < pruned { actions.append(.dropped(after: since, through: pruned)) }
        if !page.isEmpty { actions.append(.write(page.map(\.frame))) }
        if let last = page.last { lastSent = last.id }
        guard page.count >= pageSize else { return actions + goLive() }
        let next = page.last?.id ?? cursor
        phase = .replaying(cursor: next, first: false, reading: writable)
        if writable { actions.append(.readPage(after: next, first: false)) }
        return actions
    }

    /// The connection takes more again: the next page of a paused replay.
    public mutating func writable() -> [Action] {
        guard case .replaying(let cursor, let first, false) = phase else { return [] }
        phase = .replaying(cursor: cursor, first: first, reading: true)
        return [.readPage(after: cursor, first: first)]
    }

    /// Live frames (those of this stream's scope, in id order).
    public mutating func live(_ frames: [(id: Int64, frame: Frame)]) -> [Action] {
        switch phase {
        case .starting, .replaying:
            waiting.append(contentsOf: frames)
            guard waiting.count <= waitingLimit else {
                phase = .ended
                waiting = []
                return [.close]
            }
            return []
        case .live:
            let fresh = unsent(frames)
            return fresh.isEmpty ? [] : [.write(fresh)]
        case .ended:
            return []
        }
    }

    /// The stream is to end (its token revoked, the daemon shutting down): now if live, else after the replay.
    public mutating func end() -> [Action] {
        switch phase {
        case .starting, .replaying:
            endAsked = true
            return []
        case .live:
            phase = .ended
            return [.end]
        case .ended:
            return []
        }
    }

    /// The connection is gone: nothing more is done.
    public mutating func closed() { phase = .ended }

    private mutating func goLive() -> [Action] {
        phase = .live
        let fresh = unsent(waiting)
        waiting = []
        var actions: [Action] = fresh.isEmpty ? [] : [.write(fresh)]
        if endAsked {
            phase = .ended
            actions.append(.end)
        } else {
            actions.append(.startHeartbeat)
        }
        return actions
    }

    /// The frames after the last one sent, which become sent.
    private mutating func unsent(_ frames: [(id: Int64, frame: Frame)]) -> [Frame] {
        var fresh: [Frame] = []
        for (id, frame) in frames where id > lastSent {
            fresh.append(frame)
            lastSent = id
        }
        return fresh
    }
}
