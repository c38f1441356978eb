import Foundation
import Libvirt
import Synchronization
import VMSessionCore

/// One libvirt connection to a remote host, for the host monitor and the host's hypervisor: opened off the
/// cooperative pool within a deadline, with keepalive on, its close reported on ``closed``, a probe that reads
/// the host's capacity and times the round trip, and the one serial queue every call on it runs on.
///
/// Why a deadline of its own: opening a `qemu+ssh://` connection to a host whose sshd accepts TCP but does not
/// answer blocks in `ssh` for as long as that lasts, and libvirt's keepalive only starts once it is open. The
/// blocked open runs on a Dispatch thread; past the deadline (or on cancellation) the caller stops waiting,
/// and a connection that opens later is closed at once.
///
/// Why one serial queue (``run(_:_:)``): libvirt 9.0's RPC client (Debian 12's, unpatched for CVE-2024-4418)
/// can dereference a dead thread's stack when two threads make calls on one remote connection at once: the
/// thread that waits for replies leaves a temporary watch (pointing at its own stack) on the client's private
/// main context whenever another thread wakes it, and a later caller dispatches it. The daemon crashed that
/// way when a host's sshd stalled during a restore. So every call on a remote connection (the hypervisor's
/// verbs, its storage and uploads, the console's writes and its stream's set-up and end, the monitor's
/// probes) runs on this queue, one at a time; the console's output is read without a call (a non-blocking
/// read of what libvirt already received, on libvirt's event loop: see ``ConsoleRelay``).
///
/// Why keepalive sends no probes (`count` 0): a probe is sent from libvirt's event loop thread, and while a
/// call is in flight that too wakes the calling thread and leaves a watch behind. With `count` 0 libvirt
/// sends none and closes the connection after `keepAliveInterval` seconds in which the host sent nothing; a
/// host's libvirtd sends its own keepalive probes every 5 s of silence by default (`keepalive_interval` in
/// libvirtd.conf), which the client answers, so a live host is never silent that long even during a long call,
/// and a stalled one (its sshd stopped) is closed within the interval, which also fails the call in flight.
public final class HostConnection: Sendable {
    let connection: Connection
    /// The one queue every libvirt call on this connection runs on (see above).
    let queue: DispatchQueue
    /// libvirt's test driver answers `virNodeGetFreeMemory` with its cells' free memory in KiB, though the call
    /// speaks bytes (test_driver.c sums `cells[].freeMem`, set in KiB): read as bytes, a test host would have
    /// 3 MiB free and no session could ever be placed on it.
    let freeMemoryInKiB: Bool
    /// Yields the reason once when libvirt closes the connection underneath, then finishes.
    public let closed: AsyncStream<String>

    init(connection: Connection, queue: DispatchQueue, closed: AsyncStream<String>, freeMemoryInKiB: Bool = false) {
        self.connection = connection
        self.queue = queue
        self.freeMemoryInKiB = freeMemoryInKiB
        self.closed = closed
    }

    /// Opens `uri`, sets keepalive (closed after `keepAliveInterval` seconds without a word from the host; with
    /// `keepAliveCount` above 0, libvirt first sends that many probes of its own, which a daemon must not ask
    /// for: see above) and watches for its close. Throws `unavailable` with libvirt's message, or when `timeout` passes.
    public static func open(
        uri: String, timeout: Duration, keepAliveInterval: Int32 = 8, keepAliveCount: UInt32 = 0, clock: any Clock<Duration>
    ) async throws(VMSessionError) -> HostConnection {
        let meeting = Meeting<Result<HostConnection, VMSessionError>>()
        let queue = DispatchQueue(label: "vmsessiond.libvirt-calls", qos: .userInitiated)
        queue.async {
            let result: Result<HostConnection, VMSessionError>
            do throws(LibvirtError) {
                let connection = try Connection(uri: uri)
                let (closed, continuation) = AsyncStream<String>.makeStream()
                try connection.setKeepAlive(interval: keepAliveInterval, count: keepAliveCount)
                try connection.onClose { reason in
                    continuation.yield(reason.description)
                    continuation.finish()
                }
                result = .success(HostConnection(connection: connection, queue: queue, closed: closed, freeMemoryInKiB: uri.hasPrefix("test:")))
            } catch {
                result = .failure(VMSessionError(.unavailable, error.message, cause: error))
            }
            // Too late (timed out or cancelled): the connection is dropped here, on its queue, which closes it.
            _ = meeting.offer(result)
        }
        let outcome = await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await clock.sleep(for: timeout)
                let reason = Task.isCancelled ? "cancelled" : "no connection within \(timeout)"
                _ = meeting.offer(.failure(VMSessionError(.unavailable, reason)))
            }
            let outcome = await meeting.wait()
            group.cancelAll()
            return outcome
        }
        return try outcome.get()
    }

    /// Runs `body` on the connection's queue, off the cooperative pool, after every call queued before it.
    /// `body` must not wait for another call on this connection (that call would wait for `body`).
    public func run<T: Sendable>(_ body: @escaping @Sendable (Connection) throws(VMSessionError) -> T) async throws(VMSessionError) -> T {
        let connection = self.connection
        let result: Result<T, VMSessionError> = await withCheckedContinuation { continuation in
            queue.async {
                do throws(VMSessionError) {
                    continuation.resume(returning: .success(try body(connection)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    /// Whether libvirt still counts the connection as open.
    public var isAlive: Bool { connection.isAlive }

    /// The host's capacity and the time a free-memory query took (one round trip), read off the pool.
    public func probe() async throws(VMSessionError) -> (capacity: HostCapacity, latency: Duration) {
        let freeShift: UInt64 = freeMemoryInKiB ? 10 : 20
        let clock = ContinuousClock()
        // On the connection's queue: a probe waits for a call in flight (the round trip is timed from its own start).
        return try await run { (connection) throws(VMSessionError) -> (HostCapacity, Duration) in
            do throws(LibvirtError) {
                let started = clock.now
                var free: UInt64?
                do throws(LibvirtError) {
                    free = try connection.freeMemory()
                } catch {
                    guard error.isUnsupported else { throw error }
                }
                let info = try connection.nodeInfo()
                // The round trip of the first call; nodeInfo's (when free memory is not reported) otherwise.
                let latency = started.duration(to: clock.now) / (free == nil ? 1 : 2)
                return (
                    HostCapacity(cpus: info.cpus, memory: Int(info.memoryKiB / 1024), freeMemory: free.map { Int($0 >> freeShift) }), latency
                )
            } catch {
                throw VMSessionError(.unavailable, error.message, cause: error)
            }
        }
    }
}

/// Where two parties meet once: the first ``offer(_:)`` is what ``wait()`` returns, later ones are refused.
final class Meeting<Value: Sendable>: Sendable {
    private struct State {
        var value: Value?
        var waiter: CheckedContinuation<Value, Never>?
        var done = false
    }
    private let state = Mutex(State())

    /// Hands `value` to the waiter; false if a value was offered before.
    func offer(_ value: Value) -> Bool {
        let waiter: CheckedContinuation<Value, Never>?? = state.withLock { state in
            guard !state.done else { return .none }
            state.done = true
            if let waiter = state.waiter {
                state.waiter = nil
                return .some(waiter)
            }
            state.value = value
            return .some(nil)
        }
        guard let waiter else { return false }
        waiter?.resume(returning: value)  // outside the lock
        return true
    }

    func wait() async -> Value {
        await withCheckedContinuation { continuation in
            let ready: Value? = state.withLock { state in
                if let value = state.value { return value }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
