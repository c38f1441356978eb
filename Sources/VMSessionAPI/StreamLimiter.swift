import Synchronization
import VMSessionCore

/// Caps the event streams one web origin may hold open, so that a page cannot exhaust the daemon with
/// EventSources.
final class StreamLimiter: Sendable {
    let perOrigin: Int
    private let open = Mutex<[String: Int]>([:])

    init(perOrigin: Int) {
        self.perOrigin = perOrigin
    }

    func acquire(_ key: String) throws(VMSessionError) {
        let granted = open.withLock { open -> Bool in
            let count = open[key, default: 0]
            guard count < perOrigin else { return false }
            open[key] = count + 1
            return true
        }
        guard granted else {
            throw VMSessionError(.tooManyStreams, "At most \(perOrigin) event streams may be open per origin; close one first.", retryAfterSeconds: 5)
        }
    }

    func release(_ key: String) {
        open.withLock { open in
            let count = open[key, default: 1] - 1
            open[key] = count > 0 ? count : nil
        }
    }
}
