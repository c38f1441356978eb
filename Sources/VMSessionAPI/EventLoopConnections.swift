import HummingbirdCore
import Logging
import NIOCore

/// Serves each connection on the NIO event loop that owns its socket.
///
/// Why it exists: Hummingbird runs a connection's handler (reading its requests, the middleware and the route,
/// writing the answers) as a task on Swift's cooperative pool, while the socket belongs to an event loop
/// thread. Every request then crossed threads twice: its bytes were read on the loop and the handler's task woken
/// on the pool, and the answer written from the pool was handed back to the loop: a GET answered from memory
/// cost four context switches and three futex calls (perf on the release build, one connection), and an event
/// for a thousand streams woke a thousand tasks on the pool, each handing its write back to a loop (half the
/// daemon's CPU in the fan-out benchmark was on the pool's side). With the connection's loop as the task's
/// executor preference (SE-0417), the handler runs where its socket is: a request is read, answered and written
/// on one thread, and an event stream's task writes its frame without a hop.
///
/// Code with an executor of its own keeps it: the ``SessionManager`` actor runs on its serial queue, libvirt
/// and scrypt on their dispatch queues, so the loops are not blocked by them. Child tasks of the handler
/// (an event stream's heartbeat, a console's input and output) inherit the preference; unstructured tasks do not.
/// What a handler does synchronously now holds the loop instead of a pool thread (an event stream's replay reads
/// SQLite there), so handlers keep blocking work on the queues that exist for it.
struct EventLoopConnections<Base: ServerChildChannel>: ServerChildChannel {
    let base: Base

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Base.Value> {
        base.setup(channel: channel, logger: logger)
    }

    func handle(value: Base.Value, logger: Logger) async {
        await withTaskExecutorPreference(EventLoopExecutor(value.channel.eventLoop)) {
            await base.handle(value: value, logger: logger)
        }
    }
}

/// An event loop as a `TaskExecutor`: the jobs of a task that prefers it run on the loop's thread.
final class EventLoopExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

extension HTTPServerBuilder {
    /// `server`'s connections, each served on its socket's event loop (``EventLoopConnections``).
    static func onEventLoops<Child: ServerChildChannel>(
        _ child: @escaping @Sendable (@escaping HTTPChannelHandler.Responder) -> Child
    ) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in EventLoopConnections(base: child(responder)) }
    }
}
