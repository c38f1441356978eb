import Dispatch

/// Runs blocking work (SQLite, scrypt, `madvise`, a file read) on a Dispatch thread and waits for it without
/// holding a thread of Swift's cooperative pool, which has one thread per core and must never block.
///
/// It is the daemon's one way off the pool for work that has no thread of its own. Work that must stay on one
/// thread keeps its own: a libvirt connection's serial queue, an X or Wayland connection's reader thread.
/// It lives in Core, which does no I/O itself, because every module that does I/O needs it and Core is the
/// one module they all depend on.
public func offPool<T: Sendable, E: Error>(
    qos: DispatchQoS.QoSClass = .default, _ body: @escaping @Sendable () throws(E) -> T
) async throws(E) -> T {
    let result: Result<T, E> = await withCheckedContinuation { continuation in
        DispatchQueue.global(qos: qos).async {
            do throws(E) {
                continuation.resume(returning: .success(try body()))
            } catch {
                continuation.resume(returning: .failure(error))
            }
        }
    }
    return try result.get()
}

/// Runs blocking work on the same Dispatch threads as ``offPool(qos:_:)`` and hands its result to `completion`
/// there: for code that is not async and must not block either (an event loop, which would stall every
/// connection it serves). The completion hops back to where it belongs itself (`EventLoop.execute`).
public func offPool<T: Sendable, E: Error>(
    qos: DispatchQoS.QoSClass = .default, _ body: @escaping @Sendable () throws(E) -> T,
    then completion: @escaping @Sendable (Result<T, E>) -> Void
) {
    DispatchQueue.global(qos: qos).async {
        do throws(E) {
            completion(.success(try body()))
        } catch {
            completion(.failure(error))
        }
    }
}
