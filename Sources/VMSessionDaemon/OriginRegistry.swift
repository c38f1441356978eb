import Foundation
import Logging
import Synchronization
import VMSessionCore
import VMSessionStore

/// Which web origins may use the daemon. Every browser request asks it, so decisions are cached in memory
/// and written through to the store; unknown origins are recorded as pending for the user to decide.
public final class OriginRegistry: Sendable {
    private let store: SessionStore
    private let cache: Mutex<[WebOrigin: WebOrigin.Status]>
    private let logger: Logger

    public init(store: SessionStore, logger: Logger) throws {
        self.store = store
        self.logger = logger
        let known = try store.allOrigins()
        cache = Mutex(Dictionary(known.map { ($0.origin, $0.status) }, uniquingKeysWith: { _, last in last }))
    }

    /// The user's decision about `origin`, or nil if it never asked.
    public func status(of origin: WebOrigin) -> WebOrigin.Status? {
        cache.withLock { $0[origin] }
    }

    /// Records a refused request; an unknown origin becomes pending (and is logged once, for the user).
    public func noteRefused(_ origin: WebOrigin) {
        let isNew = cache.withLock { cache -> Bool in
            guard cache[origin] == nil else { return false }
            cache[origin] = .pending
            return true
        }
        do {
            try store.noteRefused(origin, at: Date())
        } catch {
            logger.error("cannot record an origin", metadata: ["origin": "\(origin)", "error": "\(error)"])
        }
        if isNew {
            logger.notice(
                "a web page asks to use vmsessiond; approve it with `vmsessionctl origins approve \(origin)` or deny it",
                metadata: ["origin": "\(origin)"])
        }
    }

    /// Approves or denies an origin.
    public func decide(_ origin: WebOrigin, _ status: WebOrigin.Status) throws(VMSessionError) -> OriginRecord {
        let record: OriginRecord
        do {
            record = try store.decide(origin, status, at: Date())
        } catch let error as VMSessionError {
            throw error
        } catch {
            throw VMSessionError(.ioError, "Cannot record the decision about \(origin).", cause: error)
        }
        cache.withLock { $0[origin] = status }
        logger.notice("origin \(status.rawValue)", metadata: ["origin": "\(origin)"])
        return record
    }

    /// Forgets an origin: its next request is refused and makes it pending again.
    public func forget(_ origin: WebOrigin) throws(VMSessionError) -> Bool {
        let removed: Bool
        do { removed = try store.forget(origin) } catch {
            throw VMSessionError(.ioError, "Cannot forget \(origin).", cause: error)
        }
        cache.withLock { $0[origin] = nil }
        return removed
    }

    public func all() throws(VMSessionError) -> [OriginRecord] {
        do { return try store.allOrigins() } catch {
            throw VMSessionError(.ioError, "Cannot read the origins.", cause: error)
        }
    }
}
