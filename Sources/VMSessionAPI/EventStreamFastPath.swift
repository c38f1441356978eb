import Dispatch
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Synchronization
import VMSessionCore
import VMSessionDaemon
import VMSessionMetrics

/// Serves event streams (`GET /api/v1/sessions/{id}/events`, `GET /api/v1/events`) on the connection's event loop,
/// below Hummingbird's async layer; every other request, and any stream it is not sure of, goes to the router.
///
/// Why it exists: on the router's path (``EventsController``) each live event reaches each stream through its
/// connection's task: a task wake-up, an async writer hop and a `writev` per event and stream. With a thousand
/// streams that was the fan-out's p99 (46–111 ms on a release build, goal < 20 ms). Here a stream is a
/// ``EventHub/LoopSubscriber``: the hub makes one `execute` per event loop per batch, and in it every stream on
/// that loop writes the same bytes (encoded once) to its channel and flushes once.
///
/// It is a security boundary, so it decides nothing of its own: the Host check (``HostGuard``), the origin decision
/// (``OriginGuard/verdict(of:origins:)``), the credentials (``Credentials``), the scope and owners
/// (``EventsController/scope(of:access:)``, ``EventsController/owner(_:token:)``), the replay start, the stream
/// limiter, the headers and the metrics are the slow path's own. Any request it would refuse is passed on, so the
/// router writes the refusal and counts it. The stream is the router's, byte for byte: the same head, `retry`,
/// the `eventsDropped` frame when retention pruned part of the replay, the replayed frames, then live frames
/// without a repeat (ids at or below the last one sent are skipped), heartbeats, and the end of the body when the
/// token is revoked (``EventHub/end(where:)``) or the daemon shuts down gracefully.
///
/// Replay reads the store, which blocks: each page is read off the loop (``offPool(qos:_:then:)``) and written on
/// it, the next one only once the channel is writable again. Live frames that arrive meanwhile wait in the stream
/// (at most ``EventHub/subscriberBuffer`` of them). A stream whose client does not read is closed, never waited
/// for, by the router's path's rule: once ``EventHub/subscriberBuffer`` frames were written to it while its channel
/// stayed unwritable (the kernel's socket buffer full, and NIO's above its high watermark), which is when the
/// router's stream, whose writer waits while the channel is unwritable, has that many queued. The frames waiting
/// are the shared buffers of the hub (one storage per event for every stream), as they are on the router's path.
/// The client reconnects with `Last-Event-ID` and replays the rest.
public final class EventStreamFastPath: Sendable {
    enum Route: FastPathRoute {
        case session, all

        var pattern: String {
            switch self {
            case .session: "/api/v1/sessions/:id/events"
            case .all: "/api/v1/events"
            }
        }
    }

    /// A stream this path takes: what it follows, on whose access, from where, and the head to answer with.
    struct Plan {
        let scope: Set<SessionID>?
        let owners: [EventHub.Owner]
        let since: Int64?
        /// The limiter's key (the `Origin` header, nil for a program).
        let streamKey: String?
        let head: HTTPResponse
        let endpoint: String
        let start: UInt64
    }

    let events: EventHub
    private let access: AccessRegistry
    private let origins: OriginRegistry
    private let originMetrics: DaemonMetrics
    private let http: HTTPMetrics<APIRequestContext>.Series
    private let limiter: StreamLimiter
    let heartbeat: Duration
    private let endpoints: [Route: String]
    private let dates = HTTPDate()
    private let taken = Atomic<Int>(0)

    init(
        events: EventHub, access: AccessRegistry, origins: OriginRegistry, originMetrics: DaemonMetrics,
        http: HTTPMetrics<APIRequestContext>.Series, limiter: StreamLimiter, heartbeat: Duration,
        routes: [(path: RouterPath, method: HTTPRequest.Method)]
    ) {
        self.events = events
        self.access = access
        self.origins = origins
        self.originMetrics = originMetrics
        self.http = http
        self.limiter = limiter
        self.heartbeat = heartbeat
        self.endpoints = Route.endpoints(servedBy: routes)
    }

    /// How many streams this path took (what the tests check it against).
    public var takenCount: Int { taken.load(ordering: .relaxed) }

    /// The stream for `head` if this path takes it (its slot in the limiter taken, counted as the router counts);
    /// nil to pass the request on.
    func plan(_ head: HTTPRequest) -> Plan? {
        guard head.method == .get, let target = head.path, let match = Self.route(target), let endpoint = endpoints[match.route],
            ReadFastPath.mayAnswer(head.headerFields)
        else { return nil }
        guard let authority = head.authority, HostGuard<APIRequestContext>.isLoopback(authority: authority) else { return nil }
        let start = DispatchTime.now().uptimeNanoseconds
        let request = Request(head: head, body: .init(buffer: ByteBuffer()))
        let verdict = OriginGuard<APIRequestContext>.verdict(of: request, origins: origins)
        guard case .pass(let cors) = FastPathOrigin(verdict) else { return nil }
        let scope: Set<SessionID>?
        let owners: [EventHub.Owner]
        let since: Int64?
        do throws(VMSessionError) {
            switch match.route {
            case .session:
                let caller = try Credentials(of: request, access: access, origins: origins).sessionCaller(match.id)
                (scope, owners) = ([caller.session], [EventsController.owner(caller.role, token: caller.token)])
            case .all:
                (scope, owners) = try EventsController.scope(of: EventsController.tokens(in: request), access: access)
            }
            since = try EventsController.replayStart(request)
            try limiter.acquire(request.headers[.origin])
        } catch {
            return nil
        }
        // The headers in the order the slow path's middleware adds them, innermost first, then Hummingbird's; no
        // length, so the codec sends the body chunked, as it does the router's stream.
        var headers = EventsController.headers
        if let cors { CORS.addHeaders(to: &headers, origin: cors) }
        SecurityHeaders<APIRequestContext>.apply(to: &headers)
        headers[.date] = dates.now()
        headers[.server] = VMSessionAPI.serverName
        if let check = verdict.check { originMetrics.originChecked(check) }
        http.active(.get).increment()
        taken.add(1, ordering: .relaxed)
        return Plan(
            scope: scope, owners: owners, since: since, streamKey: request.headers[.origin], head: HTTPResponse(status: .ok, headerFields: headers),
            endpoint: endpoint,
            start: start)
    }

    /// Gives back what ``plan(_:)`` took, once the stream is over, and counts the request as the router does.
    func finished(_ plan: Plan) {
        limiter.release(plan.streamKey)
        http.record(.init(endpoint: plan.endpoint, method: .get, status: .ok), since: plan.start)
        http.active(.get).decrement()
    }

    /// The route and the session id of a request target taken here: exactly these paths, a UUID-shaped id, any query.
    static func route(_ target: String) -> (route: Route, id: String?)? {
        let path = target.firstIndex(of: "?").map { target[..<$0] } ?? target[...]
        if path == "/api/v1/events" { return (.all, nil) }
        let prefix = "/api/v1/sessions/"
        let suffix = "/events"
        guard path.hasPrefix(prefix), path.hasSuffix(suffix) else { return nil }
        let id = path.dropFirst(prefix.count).dropLast(suffix.count)
        guard let session = ReadFastPath.route(prefix + id), session.route == .session else { return nil }
        return (.session, session.id)
    }
}

/// Told to the stream handler when the server quiesces (graceful shutdown): Hummingbird's state handler keeps
/// `ChannelShouldQuiesceEvent` to itself, so ``EventStreamInstaller`` passes this on behind it.
struct EventStreamShouldEnd {}

/// One connection's event stream on the fast path (see ``EventStreamFastPath``), behind Hummingbird's
/// `HTTPConnectionStateHandler` (and the read fast path's handler), in front of the async channel the router reads.
///
/// A request it takes never reaches the router; requests pipelined behind it wait here until its stream ends, then
/// go on in order. It takes a stream only when every request it passed on has been answered.
final class EventStreamHandler: ChannelDuplexHandler, RemovableChannelHandler, EventHub.LoopSubscriber {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart
    typealias Flow = EventStreamFlow<ByteBuffer>

    /// The stream this connection serves: what it does next (``EventStreamFlow``), its subscription, its heartbeat.
    final class Stream {
        let plan: EventStreamFastPath.Plan
        var flow: Flow
        /// The hub's key while subscribed.
        var key: UInt64?
        var heartbeat: Scheduled<Void>?
        /// Frames written since the channel last became unwritable (0 while it is writable).
        var backlog = 0
        /// The HTTP encoder's context, once the head went through it: the flow's frames are then whole HTTP/1.1
        /// chunks (``EventHub/chunk(_:)``), written from here, below the encoder, the codecs and the state handlers
        /// that would each box, retain and pass on every frame of every stream. nil: frames go down the pipeline.
        var belowEncoder: ChannelHandlerContext?

        init(plan: EventStreamFastPath.Plan) {
            self.plan = plan
            flow = Flow(since: plan.since, pageSize: EventsController.replayPage, waitingLimit: EventHub.subscriberBuffer)
        }
    }

    private let fastPath: EventStreamFastPath
    private var context: ChannelHandlerContext?
    private var stream: Stream?
    /// Requests passed on to the router and not answered yet.
    private var passed = 0
    /// Request parts read while a stream is open (pipelined behind it), passed on once it ends.
    private var held: [HTTPRequestPart] = []
    static let maximumHeldParts = 256

    init(_ fastPath: EventStreamFastPath) {
        self.fastPath = fastPath
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // Hummingbird's state handler in front keeps `channelInactive` to itself: the close is seen here instead.
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.channel.closeFuture.whenComplete { _ in handler.value.channelClosed() }
    }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if let stream {
            if case .starting = stream.flow.phase, case .end = part {
                start(stream, context: context)
                return
            }
            held.append(part)
            if held.count > Self.maximumHeldParts { context.close(promise: nil) }
            return
        }
        if case .head(let head) = part {
            if passed == 0, context.channel.isWritable, let plan = fastPath.plan(head) {
                stream = Stream(plan: plan)
                return
            }
            passed += 1
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { passed = max(passed - 1, 0) }
        context.write(data, promise: promise)
    }

    /// The connection is gone: the stream is forgotten (its subscription, slot and heartbeat).
    private func channelClosed() {
        if let stream {
            if let key = stream.key { fastPath.events.unsubscribe(key) }
            stream.key = nil
            stream.flow.closed()
            forget(stream)
        }
        held = []
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if let stream, context.channel.isWritable {
            stream.backlog = 0
            perform(stream.flow.writable(), on: stream, context: context)
            context.flush()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let stream, let channelEvent = event as? ChannelEvent, channelEvent == .inputClosed {
            // The client closed its side: an event stream's client sends nothing after its request, so it has gone
            // (a browser tab closed, curl ended). Forgotten now, not at the next write that fails.
            if let key = stream.key { fastPath.events.unsubscribe(key) }
            stream.key = nil
            stream.flow.closed()
            context.close(promise: nil)
        }
        guard event is EventStreamShouldEnd else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // As the router's stream on graceful shutdown: what is queued goes out, then the end.
        guard let stream else { return }
        if let key = stream.key { fastPath.events.unsubscribe(key) }
        stream.key = nil
        perform(stream.flow.end(), on: stream, context: context)
        context.flush()
    }

    // MARK: The hub's side (on this loop)

    func receive(_ frames: [EventHub.LiveFrame], for key: UInt64, sessions: Set<SessionID>?) -> Int? {
        guard let stream, stream.key == key, let context else { return 0 }
        let chunked = stream.belowEncoder != nil
        let wanted = frames.lazy.filter { sessions?.contains($0.session) ?? true }.map { (id: $0.id, frame: chunked ? $0.chunk : $0.bytes) }
        let taken = Array(wanted)
        let written = perform(stream.flow.live(taken), on: stream, context: context)
        if case .ended = stream.flow.phase {
            // Closed: too many frames waited for the replay.
            return nil
        }
        // Frames taken count as delivered, written now or waiting for the replay to end (the router's stream counts
        // at hand-over too).
        guard written > 0 else { return taken.count }
        context.flush()
        // A client that does not read: its frames pile up in the daemon. Closed, never waited for.
        if !context.channel.isWritable { stream.backlog += written }
        guard stream.backlog <= EventHub.subscriberBuffer else {
            stream.key = nil
            stream.flow.closed()
            context.close(promise: nil)
            return nil
        }
        return taken.count
    }

    func endedByHub(_ key: UInt64) {
        guard let stream, stream.key == key, let context else { return }
        stream.key = nil
        perform(stream.flow.end(), on: stream, context: context)
        context.flush()
    }

    // MARK: The stream

    private func start(_ stream: Stream, context: ChannelHandlerContext) {
        stream.key = fastPath.events.subscribe(on: context.eventLoop, toAny: stream.plan.scope, owners: stream.plan.owners, self)
        context.write(wrapOutboundOut(.head(stream.plan.head)), promise: nil)
        context.write(wrapOutboundOut(.body(EventsController.retry)), promise: nil)
        // The head has no length, and NIO's codec answers HTTP/1.1: the encoder chunks the body. Only then are
        // frames written below it, as chunks made once per event.
        if stream.plan.head.headerFields[.contentLength] == nil {
            stream.belowEncoder = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self)
        }
        perform(stream.flow.start(), on: stream, context: context)
        context.flush()
    }

    /// Does what the flow says; returns how many live or replayed frames it wrote. The caller flushes.
    @discardableResult
    private func perform(_ actions: [Flow.Action], on stream: Stream, context: ChannelHandlerContext) -> Int {
        var written = 0
        for action in actions {
            switch action {
            case .readPage(let after, let first):
                read(stream, after: after, first: first, context: context)
            case .dropped(let after, let through):
                context.write(wrapOutboundOut(.body(EventsController.droppedFrame(after: after, through: through))), promise: nil)
            case .write(let frames):
                if let below = stream.belowEncoder {
                    for frame in frames { below.write(NIOAny(IOData.byteBuffer(frame)), promise: nil) }
                } else {
                    for frame in frames { context.write(wrapOutboundOut(.body(frame)), promise: nil) }
                }
                written += frames.count
            case .startHeartbeat:
                scheduleHeartbeat(stream, context: context)
            case .end:
                if let key = stream.key { fastPath.events.unsubscribe(key) }
                stream.key = nil
                forget(stream)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                // The requests that waited behind the stream go on, in order.
                let parts = held
                held = []
                for part in parts { channelRead(context: context, data: wrapInboundOut(part)) }
            case .close:
                stream.key = nil
                context.close(promise: nil)
            }
        }
        return written
    }

    /// Reads a page of the replay off the loop (the store blocks), and hands it to the flow on the loop.
    private func read(_ stream: Stream, after cursor: Int64, first: Bool, context: ChannelHandlerContext) {
        let store = fastPath.events.store
        let scope = stream.plan.scope
        let loop = context.eventLoop
        let target = NIOLoopBound((handler: self, stream: stream, context: context), eventLoop: loop)
        offPool({ () throws -> (pruned: Int64?, page: [SessionEvent]) in
            let pruned = first ? try store.prunedThrough(anyOf: scope) : nil
            return (pruned, try store.events(forAny: scope, after: cursor, limit: EventsController.replayPage))
        }, then: { result in
            loop.execute { target.value.handler.replayed(result, for: target.value.stream, context: target.value.context) }
        })
    }

    private func replayed(_ result: Result<(pruned: Int64?, page: [SessionEvent]), any Error>, for stream: Stream, context: ChannelHandlerContext) {
        // The connection closed (or another stream began) while the page was read.
        guard self.stream === stream else { return }
        guard case .success(let (pruned, page)) = result else {
            // As the router's stream when a read fails: the connection ends without the body's end.
            stream.flow.closed()
            context.close(promise: nil)
            return
        }
        let chunked = stream.belowEncoder != nil
        let frames = page.map { (id: $0.id, frame: chunked ? EventHub.chunk(EventsController.frame($0)) : EventsController.frame($0)) }
        perform(stream.flow.pageRead(pruned: pruned, page: frames, writable: context.channel.isWritable), on: stream, context: context)
        context.flush()
    }

    private func scheduleHeartbeat(_ stream: Stream, context: ChannelHandlerContext) {
        let every = fastPath.heartbeat.components
        let nanoseconds = every.seconds * 1_000_000_000 + every.attoseconds / 1_000_000_000
        stream.heartbeat = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: .nanoseconds(nanoseconds)) { [self] in
            guard self.stream === stream, case .live = stream.flow.phase else { return }
            context.writeAndFlush(wrapOutboundOut(.body(EventsController.keepAlive)), promise: nil)
            scheduleHeartbeat(stream, context: context)
        }
    }

    /// Forgets the stream: its heartbeat, its slot in the limiter, and counts its request.
    private func forget(_ stream: Stream) {
        guard self.stream === stream else { return }
        stream.heartbeat?.cancel()
        self.stream = nil
        fastPath.finished(stream.plan)
    }
}

/// Puts an ``EventStreamHandler`` behind Hummingbird's `HTTPConnectionStateHandler` (and behind the read fast path's
/// handler, if there) as the first request arrives, and stays in front of the state handler to tell the stream
/// handler when the server quiesces (``EventStreamShouldEnd``).
final class EventStreamInstaller: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    private let fastPath: EventStreamFastPath
    private var installed = false

    init(_ fastPath: EventStreamFastPath) {
        self.fastPath = fastPath
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !installed {
            installed = true
            let pipeline = context.pipeline.syncOperations
            let behind: (any ChannelHandler)? =
                (try? pipeline.handler(type: ReadFastPathHandler.self)) ?? (try? pipeline.handler(type: HTTPConnectionStateHandler.self))
            // Without the state handler (another Hummingbird), every request goes to the router.
            if let behind { try? pipeline.addHandler(EventStreamHandler(fastPath), position: .after(behind)) }
        }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        if event is ChannelShouldQuiesceEvent { context.fireUserInboundEventTriggered(EventStreamShouldEnd()) }
    }
}
