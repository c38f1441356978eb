import NIOCore
import VMSessionCore

/// A console client's connection as the console itself writes to it: whole messages, framed once for every
/// client (``ConsoleMultiplexer/Framing``), written into the channel below the protocol's encoder, on the
/// channel's event loop.
///
/// Why it exists: a client that had a task of its own woke that task for every batch of output, and the task
/// handed the batch to the connection's async writer, which hopped to the event loop again. Fifty clients of one
/// chatty guest cost the daemon 3.2 times one client's CPU. Now the console makes one `execute` per event loop
/// per chunk of output, and in it writes the same bytes to every client on that loop.
///
/// All its members but ``eventLoop`` are used on that loop alone.
public final class ConsoleChannel: Sendable {
    public let eventLoop: any EventLoop
    /// The encoder's context: what is written there goes to the handlers below it, toward the socket.
    private let below: NIOLoopBound<ChannelHandlerContext>
    private let open: NIOLoopBoundBox<Bool>

    /// On the channel's loop: frames are written below `encoder`, the context of the protocol's frame encoder.
    public init(writingBelow encoder: ChannelHandlerContext) {
        eventLoop = encoder.eventLoop
        below = NIOLoopBound(encoder, eventLoop: encoder.eventLoop)
        open = NIOLoopBoundBox(true, eventLoop: encoder.eventLoop)
    }

    /// On the loop: writes `frames` and flushes; `sent` is called once the socket took them (or the connection
    /// failed), with nothing held.
    func write(_ frames: ByteBuffer, sent: (@Sendable () -> Void)? = nil) {
        guard open.value else {
            sent?()
            return
        }
        let context = below.value
        if let sent {
            let promise = eventLoop.makePromise(of: Void.self)
            promise.futureResult.whenComplete { _ in sent() }
            context.write(NIOAny(IOData.byteBuffer(frames)), promise: promise)
        } else {
            context.write(NIOAny(IOData.byteBuffer(frames)), promise: nil)
        }
        context.flush()
    }

    /// From any task: nothing more is written by the console, from the moment this returns. The connection's
    /// own writer (the close frame) goes after everything the console wrote.
    public func stop() async {
        let open = open
        try? await eventLoop.submit { open.value = false }.get()
    }
}
