import Foundation
import Libvirt
import Synchronization
import VMSessionCore

/// One libvirt connection to a remote host, for the host monitor: opened off the cooperative pool within a
/// deadline, with keepalive on, its close reported on ``closed``, and a probe that reads the host's capacity
/// and times the round trip.
///
/// Why a deadline of its own: opening a `qemu+ssh://` connection to a host whose sshd accepts TCP but does not
/// answer blocks in `ssh` for as long as that lasts, and libvirt's keepalive only starts once it is open. The
/// blocked open runs on a Dispatch thread; past the deadline (or on cancellation) the caller stops waiting,
/// and a connection that opens later is closed at once.
public final class HostConnection: Sendable {
    let connection: Connection
    /// libvirt's test driver answers `virNodeGetFreeMemory` with its cells' free memory in KiB, though the call
    /// speaks bytes (test_driver.c sums `cells[].freeMem`, set in KiB): read as bytes, a test host would have
    /// 3 MiB free and no session could ever be placed on it.
    let freeMemoryInKiB: Bool
    /// Yields the reason once when libvirt closes the connection underneath, then finishes.
    public let closed: AsyncStream<String>

    init(connection: Connection, closed: AsyncStream<String>, freeMemoryInKiB: Bool = false) {
        self.connection = connection
        self.freeMemoryInKiB = freeMemoryInKiB
        self.closed = closed
    }

    /// Opens `uri`, sets keepalive (a probe after `keepAliveInterval` seconds of silence, closed after `keepAliveCount`
    /// unanswered) and watches for its close. Throws `unavailable` with libvirt's message, or when `timeout` passes.
    public static func open(
        uri: String, timeout: Duration, keepAliveInterval: Int32 = 2, keepAliveCount: UInt32 = 2, clock: any Clock<Duration>
    ) async throws(VMSessionError) -> HostConnection {
        let meeting = Meeting<Result<Connection, VMSessionError>>()
        DispatchQueue.global().async {
            let result: Result<Connection, VMSessionError>
            do throws(LibvirtError) {
                result = .success(try Connection(uri: uri))
            } catch {
                result = .failure(VMSessionError(.unavailable, error.message, cause: error))
            }
            // Too late (timed out or cancelled): the connection is dropped here, which closes it.
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
        let connection = try outcome.get()
        let (closed, continuation) = AsyncStream<String>.makeStream()
        do throws(LibvirtError) {
            try connection.setKeepAlive(interval: keepAliveInterval, count: keepAliveCount)
            try connection.onClose { reason in
                continuation.yield(reason.description)
                continuation.finish()
            }
        } catch {
            throw VMSessionError(.unavailable, error.message, cause: error)
        }
        return HostConnection(connection: connection, closed: closed, freeMemoryInKiB: uri.hasPrefix("test:"))
    }

    /// Whether libvirt still counts the connection as open.
    public var isAlive: Bool { connection.isAlive }

    /// The host's capacity and the time a free-memory query took (one round trip), read off the pool.
    public func probe() async throws(VMSessionError) -> (capacity: HostCapacity, latency: Duration) {
        let connection = self.connection
        let freeShift: UInt64 = freeMemoryInKiB ? 10 : 20
        let clock = ContinuousClock()
        return try await offPool { () throws(VMSessionError) -> (HostCapacity, Duration) in
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
