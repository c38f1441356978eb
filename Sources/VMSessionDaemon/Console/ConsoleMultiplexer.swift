import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import VMSessionCore
import VMSessionHypervisor

/// One session's serial console shared by every client that watches it: the output fanned out to all of
/// them from one follower of the console log, the input of the writers merged into the one connection to
/// QEMU's console socket.
///
/// - **History.** A new viewer first gets the ``ConsoleHistory`` (the tail of the log when the console was
///   attached, then everything since), then live output, with no gap or repeat between the two: the history
///   is taken and the viewer registered under one lock, and both are fed by the same follower.
/// - **Nobody waits for a slow viewer.** Output is handed to each viewer's own queue; a viewer whose queue
///   holds more than `viewerBufferBytes` not yet sent is dropped (``ConsoleClose/tooSlow(bufferedBytes:)``).
/// - **One copy for all viewers.** Each chunk of output is put in one `ByteBuffer` that every viewer's queue
///   shares; a viewer that keeps up sends it as it is (the same storage goes to every connection), and only
///   one that fell behind pays for merging what waited for it into one frame.
/// - **Input.** Keystrokes go to QEMU in order, over a connection made when they come (QEMU takes one
///   client on the socket; it is gone while the VM has no process, and back after a start or restore). When
///   it cannot be reached, the writers are told (a `notice`) instead of the input being kept.
///
/// Locking: one `Mutex` over the viewers and the history; nothing is yielded, finished or called while it
/// is held (fan-out takes a snapshot and delivers outside).
public final class ConsoleMultiplexer: Sendable {
    /// The sizes a console works within (`console.*` settings).
    public struct Limits: Sendable, Equatable {
        /// Bytes of output kept for new viewers.
        public var historyBytes: Int
        /// Output waiting for one viewer before that viewer is dropped.
        public var viewerBufferBytes: Int
        /// Clients of one console at once.
        public var viewers: Int
        /// What one writer may type: a burst, then a steady rate.
        public var inputBurst: Int
        public var inputBytesPerSecond: Int
        /// How long the connection to QEMU's console socket stays up after the last keystroke. While it is up,
        /// QEMU writes every byte of output to it as well as to the log (the daemon drops that copy); without a
        /// client QEMU only logs. So it is up only while somebody types.
        public var inputIdle: Duration

        public init(
            historyBytes: Int, viewerBufferBytes: Int, viewers: Int, inputBurst: Int, inputBytesPerSecond: Int,
            inputIdle: Duration = .seconds(5)
        ) {
            self.inputIdle = inputIdle
            self.historyBytes = historyBytes
            self.viewerBufferBytes = viewerBufferBytes
            self.viewers = viewers
            self.inputBurst = inputBurst
            self.inputBytesPerSecond = inputBytesPerSecond
        }

        public static let defaults = Limits(
            historyBytes: 256 * 1024, viewerBufferBytes: 1 << 20, viewers: 64, inputBurst: 64 * 1024, inputBytesPerSecond: 32 * 1024)
    }

    /// What a viewer's queue carries.
    public enum Output: Sendable, Equatable {
        /// Output bytes: shared with the other viewers when this viewer's batch is one chunk.
        case bytes(ByteBuffer)
        case control(ConsoleControl)
    }

    /// One client of the console, as its connection's handler sees it.
    ///
    /// Its queue is a batch, not a stream of chunks: QEMU writes the log a few bytes at a time, and what came
    /// while the handler was writing goes out merged, as one frame, on its next turn (a chunk per frame made
    /// fifty viewers of one chatty guest cost the daemon a core). Controls keep their place between the bytes.
    public final class Viewer: Sendable {
        public let mode: ConsoleProtocol.Mode
        /// The history to send first, before ``output``.
        public let history: [UInt8]
        /// Live output and notices, a batch at a time; it ends when the viewer is dropped or the console ends
        /// (see ``closeReason``), after what was queued before the end.
        public var output: Batches { Batches(viewer: self) }
        let id: Int
        private let pending = Mutex(Pending())
        /// Rung when output is queued, finished when the viewer ends; holds one ring at most.
        private let doorbell: AsyncStream<Void>
        private let bell: AsyncStream<Void>.Continuation
        private let closing = Mutex<ConsoleClose?>(nil)
        private let budget: Mutex<ConsoleInputBudget<ContinuousClock.Instant>>
        let console: ConsoleMultiplexer

        /// What is waiting for the handler: the batches before the last control, and the bytes after it.
        private struct Pending: Sendable {
            var items: [Output] = []
            /// The chunks since the last control, each shared with the other viewers.
            var tail: [ByteBuffer] = []
            /// Bytes queued and not yet reported ``sent(_:)`` (taken ones count until the handler wrote them).
            var unsent = 0

            mutating func take() -> [Output] {
                closeTail()
                defer { items = [] }
                return items
            }

            /// Ends the run of chunks since the last control: one chunk as it is (shared), several merged.
            mutating func closeTail() {
                guard let first = tail.first else { return }
                if tail.count == 1 {
                    items.append(.bytes(first))
                } else {
                    var merged = ByteBuffer()
                    merged.reserveCapacity(tail.reduce(0) { $0 + $1.readableBytes })
                    for chunk in tail { merged.writeImmutableBuffer(chunk) }
                    items.append(.bytes(merged))
                }
                tail = []
            }
        }

        init(id: Int, mode: ConsoleProtocol.Mode, history: [UInt8], console: ConsoleMultiplexer, limits: Limits) {
            self.id = id
            self.mode = mode
            self.history = history
            self.console = console
            budget = Mutex(ConsoleInputBudget(burst: limits.inputBurst, bytesPerSecond: limits.inputBytesPerSecond))
            (doorbell, bell) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        }

        /// The session whose console this is.
        public var session: SessionID { console.session }

        /// Why the console ended this viewer, once it has; nil while it is served.
        public var closeReason: ConsoleClose? { closing.withLock { $0 } }

        /// The handler wrote `count` bytes of output to the client (they no longer count against its bound).
        public func sent(_ count: Int) { pending.withLock { $0.unsent -= count } }

        /// Keystrokes from this client. Throws the close that the client must get when it may not type
        /// (read-only) or types too fast; a VM that cannot take input is said as a notice instead.
        public func type(_ bytes: [UInt8]) throws(ConsoleCloseError) {
            guard mode == .write else { throw ConsoleCloseError(.readOnly) }
            guard !bytes.isEmpty else { return }
            let allowed = budget.withLock { $0.take(bytes.count, now: .now) }
            // The queue to QEMU is bounded too (a flood of one-byte frames fits the byte budget).
            guard allowed, case .enqueued = console.input.yield(bytes) else {
                throw ConsoleCloseError(.typingTooFast(bytesPerSecond: console.limits.inputBytesPerSecond))
            }
        }

        /// The client is gone (or was closed): it leaves the console.
        public func leave() { console.leave(self) }

        /// Queues output; false if output was already waiting and this took the viewer past its bound (a chunk
        /// larger than the bound still goes to a viewer that has caught up).
        func offer(_ bytes: ByteBuffer, limit: Int) -> Bool {
            let queued = pending.withLock { pending -> Bool in
                guard pending.unsent == 0 || pending.unsent + bytes.readableBytes <= limit else { return false }
                pending.unsent += bytes.readableBytes
                pending.tail.append(bytes)
                return true
            }
            if queued { bell.yield() }
            return queued
        }

        /// Queues a control after the output queued so far.
        func offer(_ control: ConsoleControl) {
            pending.withLock { pending in
                pending.closeTail()
                pending.items.append(.control(control))
            }
            bell.yield()
        }

        /// Everything queued, in order, consecutive bytes merged; empty when nothing waits.
        func take() -> [Output] { pending.withLock { $0.take() } }

        /// Ends the viewer's queue, remembering why (the first reason wins). A viewer dropped for being slow
        /// loses what was queued for it; otherwise the handler still gets it before the end.
        func end(_ reason: ConsoleClose?) {
            closing.withLock { if $0 == nil { $0 = reason } }
            if case .tooSlow = reason { pending.withLock { $0 = Pending() } }
            bell.finish()
        }

        /// The viewer's output as an `AsyncSequence` of batches (one iterator at a time, as the handler's).
        public struct Batches: AsyncSequence, Sendable {
            let viewer: Viewer

            public func makeAsyncIterator() -> Iterator { Iterator(viewer: viewer, doorbell: viewer.doorbell.makeAsyncIterator()) }

            public struct Iterator: AsyncIteratorProtocol {
                let viewer: Viewer
                var doorbell: AsyncStream<Void>.Iterator

                /// The next batch: waits while nothing is queued; nil once the viewer has ended (or the task was
                /// cancelled) and what was queued before has been taken.
                public mutating func next() async -> [Output]? {
                    while true {
                        let batch = viewer.take()
                        if !batch.isEmpty { return batch }
                        guard await doorbell.next() != nil else {
                            let rest = viewer.take()
                            return rest.isEmpty ? nil : rest
                        }
                    }
                }
            }
        }
    }

    private struct State: Sendable {
        var history: ConsoleHistory
        var viewers: [Int: Viewer] = [:]
        var nextViewer = 0
        var ended: ConsoleClose?
        var lastNotice: ContinuousClock.Instant?
    }

    public let session: SessionID
    let endpoints: ConsoleEndpoints
    let limits: Limits
    let logger: Logger
    private let state: Mutex<State>
    private let follower: Mutex<LogFollower?> = Mutex(nil)
    /// Keystrokes on their way to QEMU, in order; read by ``pumpInput()`` alone.
    let input: AsyncStream<[UInt8]>.Continuation
    private let inputs: AsyncStream<[UInt8]>

    /// Attaches to the console: reads the log's tail as history and starts following the log.
    init(
        session: SessionID, endpoints: ConsoleEndpoints, limits: Limits, logger: Logger
    ) throws(VMSessionError) {
        self.session = session
        self.endpoints = endpoints
        self.limits = limits
        self.logger = logger
        // A bounded input queue: what a writer may have in flight is bounded by its budget anyway.
        (inputs, input) = AsyncStream.makeStream(of: [UInt8].self, bufferingPolicy: .bufferingOldest(1024))
        state = Mutex(State(history: ConsoleHistory(capacity: limits.historyBytes)))
        // The follower starts where the tail ended, and reads to the end at once: what is written between the
        // two is neither lost nor repeated.
        let tail = try LogFollower.tail(of: endpoints.log, count: limits.historyBytes)
        state.withLock { $0.history = ConsoleHistory(capacity: limits.historyBytes, tail: tail.bytes, complete: tail.complete) }
        let follower = try LogFollower(
            path: endpoints.log, from: tail.size,
            deliver: { [weak self] bytes in self?.deliver(bytes) },
            ended: { [weak self] ending in
                switch ending {
                case .removed: self?.end(.sessionClosed)
                case .failed(let why):
                    self?.logger.warning("console log unreadable", metadata: ["why": "\(why)"])
                    self?.end(.failed)
                }
            })
        self.follower.withLock { $0 = follower }
    }

    /// A new client: its history and its queue, registered together. Nil when the console is full or ended.
    func join(_ mode: ConsoleProtocol.Mode) -> Viewer? {
        state.withLock { state -> Viewer? in
            guard state.ended == nil, state.viewers.count < limits.viewers else { return nil }
            let viewer = Viewer(id: state.nextViewer, mode: mode, history: state.history.replay, console: self, limits: limits)
            state.nextViewer += 1
            state.viewers[viewer.id] = viewer
            return viewer
        }
    }

    var viewerCount: Int { state.withLock { $0.viewers.count } }
    var hasEnded: Bool { state.withLock { $0.ended != nil } }

    /// New output from the log: into the history, then to every viewer (outside the lock).
    func deliver(_ bytes: [UInt8]) {
        let viewers = state.withLock { state -> [Viewer] in
            state.history.append(bytes)
            return Array(state.viewers.values)
        }
        // One buffer for every viewer: a viewer's queue holds a reference, not a copy.
        let chunk = ByteBuffer(bytes: bytes)
        for viewer in viewers where !viewer.offer(chunk, limit: limits.viewerBufferBytes) {
            remove(viewer, because: .tooSlow(bufferedBytes: limits.viewerBufferBytes))
        }
    }

    /// Tells the writers something, at most once every few seconds (a notice per keystroke would be noise).
    func notice(_ message: String) {
        let now = ContinuousClock.now
        let viewers = state.withLock { state -> [Viewer] in
            if let last = state.lastNotice, last.duration(to: now) < .seconds(3) { return [] }
            state.lastNotice = now
            return state.viewers.values.filter { $0.mode == .write }
        }
        for viewer in viewers { viewer.offer(.notice(message)) }
    }

    func leave(_ viewer: Viewer) { remove(viewer, because: nil) }

    private func remove(_ viewer: Viewer, because reason: ConsoleClose?) {
        let last = state.withLock { state -> Bool in
            guard state.viewers.removeValue(forKey: viewer.id) != nil else { return false }
            guard state.viewers.isEmpty, state.ended == nil else { return false }
            state.ended = .sessionClosed
            return true
        }
        viewer.end(reason)
        if last { shutDown() }
    }

    /// Ends the console for every viewer (session closed, daemon stopping, log unreadable).
    func end(_ reason: ConsoleClose) {
        let viewers = state.withLock { state -> [Viewer] in
            guard state.ended == nil else { return [] }
            state.ended = reason
            defer { state.viewers = [:] }
            return Array(state.viewers.values)
        }
        for viewer in viewers { viewer.end(reason) }
        shutDown()
    }

    private func shutDown() {
        let follower = self.follower.withLock { follower in
            defer { follower = nil }
            return follower
        }
        follower?.stop()
        input.finish()
    }

    // MARK: Input

    /// Carries keystrokes to QEMU until the console ends. Run by the ``ConsoleHub``, one task per console.
    ///
    /// A connection is made for the first keystroke and closed after `limits.inputIdle` without one. A keystroke
    /// whose write fails (the connection was closed for idleness, or QEMU restarted after a restore) is sent
    /// again on a new connection; only when none can be made are the writers told that it did not arrive.
    func pumpInput() async {
        var pending = inputs.makeAsyncIterator()
        while let first = await pending.next() {
            var unsent: [UInt8]? = first
            var attempts = 0
            while let bytes = unsent {
                attempts += 1
                guard attempts <= 2, let channel = await connectInput() else {
                    notice("The VM is not running: what was typed did not reach it. Start or resume the session first.")
                    unsent = nil
                    break
                }
                let lastInput = LastInput()
                let connection = channel.channel
                let idle = limits.inputIdle
                do {
                    try await channel.executeThenClose { _, toQEMU in
                        try await withThrowingTaskGroup(of: Void.self) { group in
                            // Closes the connection once nobody has typed for a while; the next keystroke's
                            // write then fails and is sent again on a new connection.
                            group.addTask {
                                while !Task.isCancelled {
                                    try await Task.sleep(for: min(.seconds(1), idle / 2))
                                    if lastInput.idle(longerThan: idle) {
                                        try await connection.close()
                                        return
                                    }
                                }
                            }
                            try await toQEMU.write(ByteBuffer(bytes: bytes))
                            unsent = nil
                            attempts = 0
                            while let next = await pending.next() {
                                unsent = next
                                try await toQEMU.write(ByteBuffer(bytes: next))
                                unsent = nil
                                lastInput.now()
                            }
                            group.cancelAll()
                        }
                    }
                } catch {
                    logger.debug("console input connection ended", metadata: ["session": "\(session)", "why": "\(error)"])
                }
            }
        }
    }

    /// A connection to QEMU's console socket whose inbound bytes (QEMU's copy of the output) are dropped as
    /// they arrive, on the event loop, so QEMU never waits for the daemon (a full socket would stall the
    /// guest's serial port); nil if nothing listens there (the VM has no process).
    private func connectInput() async -> NIOAsyncChannel<ByteBuffer, ByteBuffer>? {
        try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(unixDomainSocketPath: endpoints.socket) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DiscardInbound())
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
    }
}

/// When the last keystroke went to QEMU, shared by the pump and its idle watch.
private final class LastInput: Sendable {
    private let instant = Mutex(ContinuousClock.now)
    func now() { instant.withLock { $0 = .now } }
    func idle(longerThan limit: Duration) -> Bool { instant.withLock { $0.duration(to: .now) > limit } }
}

/// Drops what it reads; nothing reaches the handlers after it.
private final class DiscardInbound: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// The close a console client must get, as an error thrown from ``ConsoleMultiplexer/Viewer/type(_:)``.
public struct ConsoleCloseError: Error, Sendable {
    public let close: ConsoleClose
    init(_ close: ConsoleClose) { self.close = close }
}
