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
/// - **Nobody waits for a slow viewer.** A viewer that holds more than `viewerBufferBytes` of output not yet
///   taken by its socket is dropped (``ConsoleClose/tooSlow(bufferedBytes:)``).
/// - **Framed once for all viewers.** A viewer's handler *attaches* its connection (``Viewer/attach(_:)``,
///   which writes the hello and the history): each chunk of output is then framed once (``Framing``) and the
///   same bytes are written to every attached viewer's ``ConsoleChannel``, one `execute` per event loop per
///   chunk, no task woken per viewer. Until then the chunk goes to the viewer's queue (one `ByteBuffer` shared
///   by every queue), which the attach writes after the history, consecutive chunks merged into one frame.
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

    /// How output becomes the bytes of the messages a client's connection carries: made once per chunk for
    /// every attached viewer (the API's WebSocket frames; in tests, the bytes as they are).
    public struct Framing: Sendable {
        public var output: @Sendable (ByteBuffer) -> ByteBuffer
        public var control: @Sendable (ConsoleControl) -> ByteBuffer

        public init(output: @escaping @Sendable (ByteBuffer) -> ByteBuffer, control: @escaping @Sendable (ConsoleControl) -> ByteBuffer) {
            self.output = output
            self.control = control
        }

        /// Output as it is, controls as their JSON.
        public static let unframed = Framing(
            output: { $0 },
            control: { control in ByteBuffer(bytes: (try? JSONEncoder().encode(control)) ?? Data()) })
    }

    /// What a viewer's queue carries until its connection is attached.
    enum Output: Sendable {
        /// Output bytes: shared with the other viewers when only one chunk came before the next control.
        case bytes(ByteBuffer)
        case control(ConsoleControl)
    }

    /// One client of the console, as its connection's handler sees it: joined (``ConsoleMultiplexer/join(_:)``),
    /// then attached to the connection (``attach(_:)``), after which the console writes its output itself.
    ///
    /// What comes between the join and the attach waits in its queue, and goes out at the attach with the
    /// consecutive chunks merged into one frame (QEMU writes the log a few bytes at a time; a frame per chunk
    /// made fifty viewers of one chatty guest cost the daemon a core). Controls keep their place between the bytes.
    public final class Viewer: Sendable {
        public let mode: ConsoleProtocol.Mode
        /// The history, written first as the viewer attaches (the hello says its size).
        public let history: [UInt8]
        let id: Int
        private let pending = Mutex(Pending())
        /// Never yields; finished when the viewer ends (what ``ended()`` waits for).
        private let ending: AsyncStream<Never>
        private let endingContinuation: AsyncStream<Never>.Continuation
        private let closing = Mutex<ConsoleClose?>(nil)
        private let budget: Mutex<ConsoleInputBudget<ContinuousClock.Instant>>
        let console: ConsoleMultiplexer

        /// What waits for the attach: the outputs before the last control, and the chunks after it.
        private struct Pending: Sendable {
            /// Set by the attach: output is then written to it, not queued.
            var channel: ConsoleChannel?
            var ended = false
            var items: [Output] = []
            /// The chunks since the last control, each shared with the other viewers.
            var tail: [ByteBuffer] = []
            /// Bytes queued or written and not yet reported ``sent(_:)`` (taken by the socket).
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
            (ending, endingContinuation) = AsyncStream.makeStream(of: Never.self)
        }

        /// The session whose console this is.
        public var session: SessionID { console.session }

        /// Why the console ended this viewer, once it has; nil while it is served.
        public var closeReason: ConsoleClose? { closing.withLock { $0 } }

        /// The socket took `count` bytes of output written to the client (they no longer count against its bound).
        public func sent(_ count: Int) { pending.withLock { $0.unsent -= count } }

        /// Output offered to this viewer and not yet taken by its socket (what its bound counts).
        var unsentBytes: Int { pending.withLock { $0.unsent } }

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

        /// The client is gone (or was closed): it leaves the console. Called once, by the connection's handler
        /// as it ends (a second call does nothing).
        public func leave() { console.leave(self) }

        /// Where an offer went.
        enum Offered {
            case queued
            /// To be written to this channel by the caller (already counted against the bound).
            case attached(ConsoleChannel)
            /// Output was already waiting and this took the viewer past its bound.
            case refused
        }

        /// Queues output, or counts it for the attached channel (a chunk larger than the bound still goes to a
        /// viewer that has caught up).
        func offer(_ bytes: ByteBuffer, limit: Int) -> Offered {
            pending.withLock { pending -> Offered in
                guard !pending.ended else { return .queued }
                guard pending.unsent == 0 || pending.unsent + bytes.readableBytes <= limit else { return .refused }
                pending.unsent += bytes.readableBytes
                if let channel = pending.channel { return .attached(channel) }
                pending.tail.append(bytes)
                return .queued
            }
        }

        /// Queues a control after the output queued so far (or writes it after the output written so far).
        func offer(_ control: ConsoleControl) {
            let channel = pending.withLock { pending -> ConsoleChannel? in
                if let channel = pending.channel { return channel }
                pending.closeTail()
                pending.items.append(.control(control))
                return nil
            }
            guard let channel else { return }
            let frame = console.framing.control(control)
            channel.eventLoop.execute { channel.write(frame) }
        }

        /// On `channel`'s event loop: writes the hello and the history to it, then what was queued meanwhile, and
        /// from then on the console writes every chunk as it comes (framed once for all attached viewers), in order,
        /// all in the console's ``Framing``. The handler then only waits for the end (``ended()``).
        public func attach(_ channel: ConsoleChannel) {
            channel.eventLoop.preconditionInEventLoop()
            channel.write(console.framing.control(.hello(mode: mode, history: history.count)))
            if !history.isEmpty { channel.write(console.framing.output(ByteBuffer(bytes: history))) }
            let queued = pending.withLock { pending -> [Output] in
                pending.channel = channel
                return pending.take()
            }
            for output in queued { write(output, to: channel) }
        }

        /// On the channel's loop: one output, framed, counted off the bound once the socket took it.
        func write(_ output: Output, to channel: ConsoleChannel) {
            switch output {
            case .bytes(let bytes):
                let count = bytes.readableBytes
                channel.write(console.framing.output(bytes)) { [self] in sent(count) }
            case .control(let control):
                channel.write(console.framing.control(control))
            }
        }

        /// Returns once the viewer has ended (dropped, the console ended, or it left); for an attached viewer,
        /// whose output the console writes itself. One task at a time may wait (it is an `AsyncStream`).
        public func ended() async {
            for await _ in ending {}
        }

        /// Ends the viewer, remembering why (the first reason wins). A viewer dropped for being slow loses what
        /// was queued for it; otherwise what was queued is still written if it attaches after the end.
        func end(_ reason: ConsoleClose?) {
            closing.withLock { if $0 == nil { $0 = reason } }
            pending.withLock { pending in
                pending.ended = true
                // Output already handed to the channel still goes; what is queued goes too, unless too slow.
                if case .tooSlow = reason {
                    pending.items = []
                    pending.tail = []
                }
            }
            endingContinuation.finish()
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
    let framing: Framing
    let logger: Logger
    private let state: Mutex<State>
    private let follower: Mutex<LogFollower?> = Mutex(nil)
    /// Keystrokes on their way to QEMU, in order; read by ``pumpInput()`` alone.
    let input: AsyncStream<[UInt8]>.Continuation
    private let inputs: AsyncStream<[UInt8]>

    /// Attaches to the console: reads the log's tail as history and starts following the log.
    init(
        session: SessionID, endpoints: ConsoleEndpoints, limits: Limits, framing: Framing = .unframed, logger: Logger
    ) throws(VMSessionError) {
        self.session = session
        self.endpoints = endpoints
        self.limits = limits
        self.framing = framing
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
        var attached: [ObjectIdentifier: [(viewer: Viewer, channel: ConsoleChannel)]] = [:]
        for viewer in viewers {
            switch viewer.offer(chunk, limit: limits.viewerBufferBytes) {
            case .queued: continue
            case .attached(let channel): attached[ObjectIdentifier(channel.eventLoop), default: []].append((viewer, channel))
            case .refused: remove(viewer, because: .tooSlow(bufferedBytes: limits.viewerBufferBytes))
            }
        }
        guard !attached.isEmpty else { return }
        // Framed once; one `execute` per event loop, in which every viewer on it is written the same bytes.
        let frame = framing.output(chunk)
        let count = chunk.readableBytes
        for targets in attached.values {
            guard let loop = targets.first?.channel.eventLoop else { continue }
            loop.execute {
                for target in targets {
                    let viewer = target.viewer
                    target.channel.write(frame) { viewer.sent(count) }
                }
            }
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
