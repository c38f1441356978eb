import Dispatch

/// A serial executor on a thread of its own, for an actor whose isolated code makes short blocking calls
/// (SQLite) that must stay atomic with its state changes.
///
/// Moving each database call off the actor would put an `await` between a change and its record, and let
/// another request in between: the intent-first ordering of ``SessionManager`` depends on there being none.
/// Running the whole actor on its own serial queue keeps that ordering and keeps the blocking calls off
/// Swift's cooperative pool, whose few threads serve every request and event stream.
final class BlockingExecutor: SerialExecutor {
    private let queue: DispatchQueue

    init(label: String) {
        queue = DispatchQueue(label: label, qos: .userInitiated)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedSerialExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }
}
