import Synchronization
import VMSessionCore
import VMSessionStore

/// What the request path reads without asking the ``SessionManager``: every session as it is now, which
/// guest APIs answer, and the operations running or recently ended. (Who each token speaks for is the
/// ``AccessRegistry``'s, which reads the sessions from here.)
///
/// Why it exists: a GET, and the access check in front of every route, used to be an actor round trip to
/// the manager (a hop onto its thread and back, queued behind whatever it was doing, a store write
/// included). The manager stays the one owner of this state; this is a copy it publishes, synchronously,
/// inside each change (so a caller sees a change, or a revoked token, from the next request on), and
/// requests read it under a short lock that is never held across a suspension, a call out or an encode.
/// Dictionaries are copy-on-write: publishing one is a reference swap, and a reader takes the value out of
/// the lock before it uses it.
public final class SessionReadModel: Sendable {
    /// How many ended operations are kept for `GET /operations/{id}` without a database read.
    public static let endedOperationsKept = 256

    private struct State: Sendable {
        var sessions: [SessionID: StoredSession] = [:]
        var apiUp: Set<SessionID> = []
        var running: [OperationID: SessionOperation] = [:]
        var ended: [OperationID: SessionOperation] = [:]
        var endedOrder: [OperationID] = []
        /// Counts every published change of the sessions: what a view of the whole list is cached against.
        var generation: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    // MARK: Reading (any thread)

    /// Every session with what the daemon keeps of it (its client, for the quota), in no order.
    func allStored() -> Dictionary<SessionID, StoredSession>.Values {
        state.withLock { $0.sessions }.values
    }

    public func session(_ id: SessionID) throws(VMSessionError) -> Session {
        guard let stored = state.withLock({ $0.sessions[id] }) else { throw VMSessionError(.notFound, "There is no session \(id).") }
        return stored.session
    }

    /// A session with whether its guest API answers: all a view of it needs that the daemon holds.
    public func view(of id: SessionID) throws(VMSessionError) -> (session: Session, apiAvailable: Bool) {
        let found = state.withLock { state in state.sessions[id].map { ($0.session, state.apiUp.contains(id)) } }
        guard let found else { throw VMSessionError(.notFound, "There is no session \(id).") }
        return found
    }

    /// Every session, oldest first, and the generation they were published at.
    public func allSessions() -> (sessions: [Session], generation: UInt64) {
        let (sessions, generation) = state.withLock { ($0.sessions, $0.generation) }
        return (sessions.values.map(\.session).sorted { $0.createdAt < $1.createdAt }, generation)
    }

    /// The generation of the sessions published last: unchanged means a cached view of the list is current.
    public var generation: UInt64 { state.withLock { $0.generation } }

    public func isGuestAPIAvailable(_ id: SessionID) -> Bool { state.withLock { $0.apiUp.contains(id) } }

    /// A running operation, or one of the last ``endedOperationsKept`` that ended; nil for any other (it may
    /// be in the store).
    public func operation(_ id: OperationID) -> SessionOperation? {
        // An ended copy is final; a running one may be the last before its end was published.
        state.withLock { $0.ended[id] ?? $0.running[id] }
    }

    // MARK: Publishing (the manager, inside its changes)

    func publish(_ stored: StoredSession?, for id: SessionID) {
        state.withLock { state in
            state.sessions[id] = stored
            state.generation &+= 1
        }
    }

    func publish(apiUp: Set<SessionID>) {
        state.withLock { state in
            state.apiUp = apiUp
            state.generation &+= 1
        }
    }

    func publish(running: [OperationID: SessionOperation]) {
        state.withLock { state in
            // An operation that leaves the running set ended: keep it (bounded) for the reads that follow.
            for (id, operation) in state.running where running[id] == nil && state.ended[id] == nil {
                state.ended[id] = operation
                state.endedOrder.append(id)
            }
            state.running = running
            if state.endedOrder.count > Self.endedOperationsKept {
                let excess = state.endedOrder.count - Self.endedOperationsKept
                for id in state.endedOrder.prefix(excess) { state.ended[id] = nil }
                state.endedOrder.removeFirst(excess)
            }
        }
    }

    /// An operation as it ended (what the store now holds); published before it leaves the running set.
    func ended(_ operation: SessionOperation) {
        state.withLock { state in
            if state.ended.updateValue(operation, forKey: operation.id) == nil { state.endedOrder.append(operation.id) }
        }
    }

    /// The manager's table of sessions: a dictionary that publishes each entry to the read model as it is
    /// set, one entry at a time (so that loading a thousand sessions does not copy the table a thousand times).
    struct Table: Sequence {
        private var storage: [SessionID: StoredSession] = [:]
        let readModel: SessionReadModel

        init(publishingTo readModel: SessionReadModel) { self.readModel = readModel }

        subscript(id: SessionID) -> StoredSession? {
            get { storage[id] }
            set {
                storage[id] = newValue
                readModel.publish(newValue, for: id)
            }
        }

        var values: Dictionary<SessionID, StoredSession>.Values { storage.values }
        var count: Int { storage.count }
        func makeIterator() -> Dictionary<SessionID, StoredSession>.Iterator { storage.makeIterator() }
    }
}
