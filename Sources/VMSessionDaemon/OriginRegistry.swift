import Foundation
import Logging
import Synchronization
import VMSessionCore
import VMSessionStore

/// Which web origins may use the daemon. Every browser request asks it, so decisions are cached in memory
/// and written through to the store; unknown origins are recorded as pending for the user to decide.
///
/// Any web page can send requests, so what a refusal costs is bounded: at most ``maximumPending`` origins
/// wait for a decision (past that, new ones are refused without being recorded, and the user is told once a
/// minute), and the refusals of an origin already known are counted in memory and written at most once per
/// ``refusalWriteInterval`` (so `requests` and `lastSeen` stay close to true without a write per request).
public final class OriginRegistry: Sendable {
    /// Refusals of one known origin not yet written, and when its row was last written.
    private struct Refusals {
        var unwritten = 0
        var writtenAt: Date
    }

    private struct State {
        var statuses: [WebOrigin: WebOrigin.Status]
        var privileged: Set<WebOrigin>
        /// The admin's egress policy per approved origin (absent: the daemon's default).
        var egress: [WebOrigin: EgressPolicy] = [:]
        /// The labels the admin requires of the hosts an approved origin's sessions go to.
        var hostLabels: [WebOrigin: [String: String]] = [:]
        var pendingCount: Int
        var refusals: [WebOrigin: Refusals] = [:]
        var overflowLoggedAt: Date?
    }

    /// What a refusal asks of the store, decided under the lock and done after it.
    private enum Write {
        case none
        case record(count: Int, isNew: Bool)
        case overflow(log: Bool)
    }

    private let store: SessionStore
    private let state: Mutex<State>
    private let logger: Logger
    public let maximumPending: Int
    public let refusalWriteInterval: TimeInterval

    public init(store: SessionStore, maximumPending: Int = 64, refusalWriteInterval: TimeInterval = 60, logger: Logger) throws {
        self.store = store
        self.logger = logger
        self.maximumPending = maximumPending
        self.refusalWriteInterval = refusalWriteInterval
        let records = try store.allOrigins()
        let known = Dictionary(records.map { ($0.origin, $0.status) }, uniquingKeysWith: { _, last in last })
        state = Mutex(
            State(
                statuses: known, privileged: Set(records.filter(\.privileged).map(\.origin)),
                egress: Dictionary(records.compactMap { record in record.egress.map { (record.origin, $0) } }, uniquingKeysWith: { _, last in last }),
                hostLabels: Dictionary(
                    records.filter { !$0.hostLabels.isEmpty }.map { ($0.origin, $0.hostLabels) }, uniquingKeysWith: { _, last in last }),
                pendingCount: known.values.count { $0 == .pending }))
    }

    /// The user's decision about `origin`, or nil if it never asked.
    public func status(of origin: WebOrigin) -> WebOrigin.Status? {
        state.withLock { $0.statuses[origin] }
    }

    /// Whether the user approved `origin` as privileged (it may change the idle-aware controller).
    public func isPrivileged(_ origin: WebOrigin) -> Bool {
        state.withLock { $0.statuses[origin] == .approved && $0.privileged.contains(origin) }
    }

    /// The labels the admin requires of the hosts an approved origin's sessions are placed on; empty: any host.
    public func hostLabels(of origin: WebOrigin) -> [String: String] {
        state.withLock { $0.statuses[origin] == .approved ? $0.hostLabels[origin] ?? [:] : [:] }
    }

    /// The egress policy the admin chose for an approved origin's guests; nil: the daemon's default.
    public func egress(of origin: WebOrigin) -> EgressPolicy? {
        state.withLock { $0.statuses[origin] == .approved ? $0.egress[origin] : nil }
    }

    /// Records a refused request; an unknown origin becomes pending (and is logged once, for the user).
    /// Returns false when the origin was not recorded because too many already wait for a decision.
    @discardableResult
    public func noteRefused(_ origin: WebOrigin) -> Bool {
        let now = Date()
        let interval = refusalWriteInterval
        let maximumPending = maximumPending
        let write = state.withLock { state -> Write in
            guard state.statuses[origin] != nil else {
                guard state.pendingCount < maximumPending else {
                    let log = state.overflowLoggedAt.map { now.timeIntervalSince($0) >= interval } ?? true
                    if log { state.overflowLoggedAt = now }
                    return .overflow(log: log)
                }
                state.statuses[origin] = .pending
                state.pendingCount += 1
                state.refusals[origin] = Refusals(writtenAt: now)
                return .record(count: 1, isNew: true)
            }
            var refusals = state.refusals[origin] ?? Refusals(writtenAt: .distantPast)
            refusals.unwritten += 1
            guard now.timeIntervalSince(refusals.writtenAt) >= interval else {
                state.refusals[origin] = refusals
                return .none
            }
            state.refusals[origin] = Refusals(writtenAt: now)
            return .record(count: refusals.unwritten, isNew: false)
        }
        switch write {
        case .none:
            return true
        case .overflow(let log):
            if log {
                let message = "\(maximumPending) web origins wait for a decision; requests of new ones are refused without being "
                    + "recorded until the user approves, denies or forgets some (`vmsessionctl origins`)"
                logger.warning("\(message)")
            }
            return false
        case .record(let count, let isNew):
            do {
                try store.noteRefused(origin, at: now, count: count)
            } catch {
                logger.error("cannot record an origin", metadata: ["origin": "\(origin)", "error": "\(error)"])
            }
            if isNew {
                logger.notice(
                    "a web page asks to use vmsessiond; approve it with `vmsessionctl origins approve \(origin)` or deny it",
                    metadata: ["origin": "\(origin)"])
            }
            return true
        }
    }

    /// Approves (optionally as privileged) or denies an origin.
    public func decide(
        _ origin: WebOrigin, _ status: WebOrigin.Status, privileged: Bool = false, egress: EgressPolicy? = nil,
        hostLabels: [String: String] = [:]
    ) throws(VMSessionError) -> OriginRecord {
        let record: OriginRecord
        do {
            record = try store.decide(origin, status, privileged: privileged, egress: egress, hostLabels: hostLabels, at: Date())
        } catch let error as VMSessionError {
            throw error
        } catch {
            throw VMSessionError(.ioError, "Cannot record the decision about \(origin).", cause: error)
        }
        state.withLock {
            Self.set(origin, status, in: &$0)
            if record.privileged { $0.privileged.insert(origin) } else { $0.privileged.remove(origin) }
            $0.egress[origin] = record.egress
            $0.hostLabels[origin] = record.hostLabels.isEmpty ? nil : record.hostLabels
        }
        logger.notice("origin \(status.rawValue)\(record.privileged ? " as privileged" : "")", metadata: ["origin": "\(origin)"])
        return record
    }

    /// Forgets an origin: its next request is refused and makes it pending again.
    public func forget(_ origin: WebOrigin) throws(VMSessionError) -> Bool {
        let removed: Bool
        do { removed = try store.forget(origin) } catch {
            throw VMSessionError(.ioError, "Cannot forget \(origin).", cause: error)
        }
        state.withLock { Self.set(origin, nil, in: &$0) }
        return removed
    }

    public func all() throws(VMSessionError) -> [OriginRecord] {
        do { return try store.allOrigins() } catch {
            throw VMSessionError(.ioError, "Cannot read the origins.", cause: error)
        }
    }

    private static func set(_ origin: WebOrigin, _ status: WebOrigin.Status?, in state: inout State) {
        if state.statuses[origin] == .pending { state.pendingCount -= 1 }
        if status == .pending { state.pendingCount += 1 }
        state.statuses[origin] = status
        state.refusals[origin] = nil
        if status == nil {
            state.privileged.remove(origin)
            state.egress[origin] = nil
        }
    }
}
