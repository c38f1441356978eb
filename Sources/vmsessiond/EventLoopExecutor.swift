import CConcurrencyHook
import NIOCore
import NIOPosix
import Synchronization

/// Makes NIO's event loops (the threads that read and write every HTTP connection) the threads that run
/// Swift Concurrency's global jobs too, instead of a second pool of their own.
///
/// Why it exists: Hummingbird reads a request on an event loop, then resumes the connection's task on the
/// cooperative pool, which hands the response back to the event loop to be written: two thread hand-offs
/// (a wake-up of a sleeping thread each) per request. `perf` on the release build showed those hand-offs,
/// not the work, were what a `GET` answered from the read model cost at one and eight connections. With
/// the jobs on the event loops a resumed task stays on the loop that woke it ("sticky"): the request is
/// read, answered and written on one thread. This is what NIO itself offers
/// (`NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()`, the same
/// hook); it is done here because NIO finds the hook with `dlsym`, which cannot see it in the release
/// binary (the Swift runtime is linked statically and exports nothing). The daemon already keeps blocking
/// work off the pool (``offPool``, the manager's own thread, libvirt's queue), which is what makes the
/// event loops safe to share. Actors with an executor of their own (the ``SessionManager``) and the main
/// actor are not affected; jobs scheduled after a delay (`Task.sleep`) still start on Swift's pool.
enum EventLoopExecutor {
    typealias Hook = @convention(thin) (UnownedJob, @convention(thin) (UnownedJob) -> Void) -> Void

    /// The singleton group's loops (Hummingbird's, AsyncHTTPClient's, the console's and display's clients).
    private static let loops: [any NIOSerialEventLoopExecutor] = MultiThreadedEventLoopGroup.singleton.makeIterator()
        .compactMap { $0 as? any NIOSerialEventLoopExecutor }
    private static let next = Atomic<Int>(0)

    /// Installs the hook, once, at the very start of the process; false if it could not (someone else's
    /// hook, or loops that are not executors), and Swift's own pool runs the jobs as before.
    @discardableResult
    static func install() -> Bool {
        guard !loops.isEmpty else { return false }
        let hook: Hook = { job, original in
            let loops = EventLoopExecutor.loops
            // Sticky: a job enqueued on a loop's own thread (a task resumed by a channel read) runs there.
            for loop in loops where loop.inEventLoop {
                loop.enqueue(ExecutorJob(job))
                return
            }
            let index = EventLoopExecutor.next.add(1, ordering: .relaxed).oldValue
            loops[(index & Int.max) % loops.count].enqueue(ExecutorJob(job))
        }
        return withUnsafeTemporaryAllocation(of: Hook.self, capacity: 1) { storage in
            guard let slot = storage.baseAddress else { return false }
            slot.initialize(to: hook)
            // The runtime calls the hook as a plain function pointer: a thin Swift function is one.
            return slot.withMemoryRebound(to: UnsafeMutableRawPointer?.self, capacity: 1) { pointer in
                guard let raw = pointer.pointee else { return false }
                return vms_install_enqueue_global_hook(raw)
            }
        }
    }
}
