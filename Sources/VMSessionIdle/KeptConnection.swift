import Dispatch
import VMSessionCore

/// One connection to a blocking C client (an X display, a D-Bus bus) that an idle source keeps open and
/// asks over, instead of connecting for every reading as the plugin did.
///
/// Why it exists: the X and D-Bus sources need the same care. Their calls block, so they run on a serial
/// queue of their own, never on the cooperative pool; a failed call closes the connection, and a new one is
/// tried on a later reading, at most every ``reopenInterval`` (so that a display or bus that comes up after
/// the daemon is picked up within a second, without hammering one that is gone).
final class KeptConnection<Handle>: @unchecked Sendable {
    /// The least time between two attempts to connect after a failure.
    static var reopenInterval: Duration { .milliseconds(500) }

    private struct State {
        var handle: Handle?
        var lastAttempt: ContinuousClock.Instant?
        var lastError: String?
    }

    /// Touched only on ``queue`` (and in `deinit`, when nothing else can hold the connection), so no lock: the
    /// calls into the C client that change it (`open`, `ask`, `close`) are callbacks, which no lock may be held
    /// across.
    private var state = State()
    private let queue: DispatchQueue
    private let open: () -> Result<Handle, ConnectionFailure>
    private let close: (Handle) -> Void

    /// `open` connects (or says why not); `close` releases a handle. Both run on the connection's queue.
    init(label: String, open: @escaping () -> Result<Handle, ConnectionFailure>, close: @escaping (Handle) -> Void) {
        queue = DispatchQueue(label: label)
        self.open = open
        self.close = close
    }

    deinit {
        if let handle = state.handle { close(handle) }
    }

    /// Runs `ask` on the kept connection, connecting first if needed. A failure of `ask` (its message)
    /// closes the connection; the next reading connects again.
    func reading<T: Sendable>(_ ask: @escaping @Sendable (Handle) -> Result<T, ConnectionFailure>) async throws(VMSessionError) -> T {
        let result: Result<T, VMSessionError> = await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: self.readingOnQueue(ask)) }
        }
        return try result.get()
    }

    /// Runs on ``queue`` only (serial): the one place that reads and changes ``state``.
    private func readingOnQueue<T>(_ ask: (Handle) -> Result<T, ConnectionFailure>) -> Result<T, VMSessionError> {
        dispatchPrecondition(condition: .onQueue(queue))
        let clock = ContinuousClock()
        if state.handle == nil {
            if let last = state.lastAttempt, clock.now < last + Self.reopenInterval {
                return .failure(VMSessionError(.unavailable, "\(state.lastError ?? "Not connected") (retrying every 0.5 s)."))
            }
            state.lastAttempt = clock.now
            switch open() {
            case .success(let handle): state.handle = handle
            case .failure(let failure):
                state.lastError = failure.message
                return .failure(VMSessionError(.unavailable, failure.message + "."))
            }
        }
        guard let handle = state.handle else { return .failure(VMSessionError(.internalError, "no connection")) }
        switch ask(handle) {
        case .success(let value): return .success(value)
        case .failure(let failure):
            close(handle)
            state.handle = nil
            state.lastAttempt = clock.now
            state.lastError = failure.message
            return .failure(VMSessionError(.unavailable, failure.message + "."))
        }
    }
}

/// Why a connection could not be made or a call on it failed, in words for the daemon's status.
struct ConnectionFailure: Error {
    let message: String
    init(_ message: String) { self.message = message }
}
