import Synchronization
import VMSessionCore

/// Caps the event streams held open: in all (every stream is a connection and a file descriptor, so the
/// daemon must stop taking streams well before it runs out of descriptors, local programs included) and
/// per web origin (so that one page cannot take them all).
final class StreamLimiter: Sendable {
    let total: Int
    let perOrigin: Int
    private struct Counts {
        var total = 0
        var byOrigin: [String: Int] = [:]
    }
    private let open = Mutex(Counts())

    init(total: Int, perOrigin: Int) {
        self.total = total
        self.perOrigin = perOrigin
    }

    /// Takes a slot for a stream of `origin` (nil: a local program). Throws `too_many_streams` if none is free.
    func acquire(_ origin: String?) throws(VMSessionError) {
        enum Refusal { case total, origin }
        let refusal = open.withLock { open -> Refusal? in
            guard open.total < total else { return .total }
            if let origin {
                let count = open.byOrigin[origin, default: 0]
                guard count < perOrigin else { return .origin }
                open.byOrigin[origin] = count + 1
            }
            open.total += 1
            return nil
        }
        switch refusal {
        case nil: return
        case .origin:
            throw VMSessionError(
                .tooManyStreams, "At most \(perOrigin) event streams may be open per origin; close one first.", retryAfterSeconds: 5)
        case .total:
            throw VMSessionError(
                .tooManyStreams,
                "The daemon holds its maximum of \(total) event streams (set by 'maxEventStreams' and the descriptor limit); close one first.",
                retryAfterSeconds: 5)
        }
    }

    /// Streams open now (the metrics).
    var openCount: Int { open.withLock { $0.total } }

    func release(_ origin: String?) {
        open.withLock { open in
            open.total = max(open.total - 1, 0)
            if let origin {
                let count = open.byOrigin[origin, default: 1] - 1
                open.byOrigin[origin] = count > 0 ? count : nil
            }
        }
    }
}
