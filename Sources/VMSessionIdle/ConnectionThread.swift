import Foundation

/// The thread that waits on one notifying connection's descriptor (a Wayland compositor's socket, an X
/// server's) and hands what arrives to its source; it owns the connection and closes it when it ends.
///
/// Why a thread of its own: libwayland and Xlib read and dispatch with blocking calls, which must never
/// run on Swift's cooperative pool, and a connection that only tells of changes has to be waited on for
/// as long as it is open. The thread sleeps in `poll(2)` until the server writes or ``stop()`` wakes it,
/// so waiting costs nothing. Both notifying sources (``WaylandIdleSource``, ``X11IdleSource``) use it.
final class ConnectionThread: @unchecked Sendable {
    private let name: String
    private let descriptor: Int32
    private let dispatch: () -> Bool
    private let finish: (_ stopped: Bool) -> Void
    private var wake: [Int32] = [-1, -1]

    /// `dispatch` handles what has arrived without blocking and returns false once the connection is
    /// over; it runs first, before any wait (a setup's round trips may have read events already).
    /// `finish` closes the connection, told whether ``stop()`` ended it (else the server did).
    init(name: String, descriptor: Int32, dispatch: @escaping () -> Bool, finish: @escaping (_ stopped: Bool) -> Void) {
        self.name = name
        self.descriptor = descriptor
        self.dispatch = dispatch
        self.finish = finish
        wake.withUnsafeMutableBufferPointer { buffer in _ = pipe(buffer.baseAddress) }
        for end in wake where end >= 0 { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
    }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = name
        thread.start()
    }

    /// Ends the thread (it closes the connection); safe to call from any thread, more than once.
    func stop() {
        var byte: UInt8 = 1
        _ = write(wake[1], &byte, 1)
    }

    private func run() {
        var descriptors = [
            pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wake[0], events: Int16(POLLIN), revents: 0),
        ]
        var stopped = false
        while dispatch() {
            descriptors[0].revents = 0
            descriptors[1].revents = 0
            guard poll(&descriptors, 2, -1) >= 0 || errno == EINTR else { break }
            if descriptors[1].revents != 0 {
                stopped = true
                break
            }
        }
        finish(stopped)
    }

    /// The wake pipe lives as long as the thread's owner, so ``stop()`` never writes to a closed descriptor.
    deinit {
        for end in wake where end >= 0 { close(end) }
    }
}

/// What a notifying connection tells its source: the user went idle, came back, or the server went away.
enum IdleEvent: Sendable {
    case idled, resumed, closed
}
