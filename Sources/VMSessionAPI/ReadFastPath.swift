import Dispatch
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTPTypes
import Synchronization
import VMSessionCore
import VMSessionDaemon
import VMSessionMetrics

/// Answers the hottest read requests (`GET` of a session, of the session list, of an operation, and of
/// `/api/v1`) as they are read, on the connection's event loop, without Hummingbird's async request path; every
/// other request, and any this one is not sure of, goes to the router untouched.
///
/// Why it exists: these answers are already encoded once per change (``EncodedViews``) and their callers are
/// checked without an actor hop, yet `perf` showed each `GET` still cost about 270 µs of CPU, spread over
/// Hummingbird's async path itself: a task per request, the middleware chain, the async response writer, the
/// scheduler switches and task queue between them. Here the same answer is made in one synchronous call.
///
/// It is a security boundary, so it decides nothing of its own: the Host check (``HostGuard``), the origin
/// decision (``OriginGuard/verdict(of:origins:)``), the credentials (``Credentials``, the same token checks),
/// the views (``SessionsController/encodedView(of:)``, ``AdminController/encodedList()``, …), the response's
/// headers (``JSONResponse``, ``CORS``, ``SecurityHeaders``) and the metrics (``HTTPMetrics``' series) are the
/// slow path's own functions. It answers only what the slow path would answer `200` without awaiting anything;
/// any refusal (a missing, wrong or revoked token, another origin, a wrong Host, an unknown id), any request
/// with a body, `HEAD`, `OPTIONS`, an `Upgrade`, `Expect` or a `Connection` other than `keep-alive`, and any
/// answer that needs an await (live figures of a running VM, an operation only the store holds, image versions
/// not read yet) is passed on, so the slow path writes it and counts it.
public final class ReadFastPath: Sendable {
    /// The routes answered here.
    enum Route: FastPathRoute {
        case daemonInfo, sessionList, session, operation

        /// The path as the router has it (its `RouterPath` names the route in the metrics).
        var pattern: String {
            switch self {
            case .daemonInfo: "/api/v1"
            case .sessionList: "/api/v1/sessions"
            case .session: "/api/v1/sessions/:id"
            case .operation: "/api/v1/operations/:operation"
            }
        }
    }

    /// A whole answer: the head as the slow path would write it, and its body.
    struct Answer {
        let head: HTTPResponse
        let body: ByteBuffer
    }

    private let sessions: SessionsController
    private let admin: AdminController
    private let access: AccessRegistry
    private let origins: OriginRegistry
    private let originMetrics: DaemonMetrics
    private let http: HTTPMetrics<APIRequestContext>.Series
    /// Each route's name in the metrics, as the router names it; a route the router does not serve is not answered here.
    private let endpoints: [Route: String]
    private let dates = HTTPDate()
    private let answers = Atomic<Int>(0)

    init(
        sessions: SessionsController, admin: AdminController, access: AccessRegistry, origins: OriginRegistry, originMetrics: DaemonMetrics,
        http: HTTPMetrics<APIRequestContext>.Series, routes: [(path: RouterPath, method: HTTPRequest.Method)]
    ) {
        self.sessions = sessions
        self.admin = admin
        self.access = access
        self.origins = origins
        self.originMetrics = originMetrics
        self.http = http
        self.endpoints = Route.endpoints(servedBy: routes)
    }

    /// How many requests were answered here (what the tests check the fast path against).
    public var answeredCount: Int { answers.load(ordering: .relaxed) }

    /// The answer to `head`, made and counted as the slow path would; nil to pass the request on.
    func answer(_ head: HTTPRequest) -> Answer? {
        guard head.method == .get, let target = head.path, let match = Self.route(target), let endpoint = endpoints[match.route],
            Self.mayAnswer(head.headerFields)
        else { return nil }
        let (route, parameter) = match
        // HostGuard: a Host that is not the loopback is refused there.
        guard let authority = head.authority, HostGuard<APIRequestContext>.isLoopback(authority: authority) else { return nil }
        let start = DispatchTime.now().uptimeNanoseconds
        let request = Request(head: head, body: .init(buffer: ByteBuffer()))
        // OriginGuard: programs, the daemon's own page, and approved origins (with CORS) get through.
        let verdict = OriginGuard<APIRequestContext>.verdict(of: request, origins: origins)
        guard case .pass(let cors) = FastPathOrigin(verdict) else { return nil }
        let credentials = Credentials(of: request, access: access, origins: origins)
        let body: ByteBuffer
        do throws(VMSessionError) {
            switch route {
            case .daemonInfo:
                guard let info = sessions.encodedDaemonInfo() else { return nil }
                body = info
            case .sessionList:
                try credentials.requireAdmin()
                body = admin.encodedList()
            case .session:
                guard let view = try sessions.encodedView(of: try credentials.sessionCaller(parameter)).body else { return nil }
                body = view
            case .operation:
                guard let operation = try sessions.knownOperation(parameter, credentials: credentials) else { return nil }
                body = JSONResponse.encode(operation)
            }
        } catch {
            return nil
        }
        // The headers in the order the slow path's middleware adds them, innermost first, then Hummingbird's.
        var response = JSONResponse.make(body: body)
        if let cors { CORS.addHeaders(to: &response.headers, origin: cors) }
        SecurityHeaders<APIRequestContext>.apply(to: &response.headers)
        response.headers[.date] = dates.now()
        response.headers[.server] = VMSessionAPI.serverName
        // Counted where the slow path counts: the origin check, and the request (HTTPMetrics).
        if let check = verdict.check { originMetrics.originChecked(check) }
        let active = http.active(head.method)
        active.increment()
        http.record(.init(endpoint: endpoint, method: head.method, status: response.status), since: start)
        active.decrement()
        answers.add(1, ordering: .relaxed)
        return Answer(head: response.head, body: body)
    }

    /// The route and its id for a request target answered here: exactly these paths, an id of a UUID's 36
    /// characters (hex digits and dashes, nothing to decode), and any query (read as the router reads it).
    static func route(_ target: String) -> (route: Route, id: String?)? {
        let path = target.firstIndex(of: "?").map { target[..<$0] } ?? target[...]
        if path == "/api/v1" { return (.daemonInfo, nil) }
        if path == "/api/v1/sessions" { return (.sessionList, nil) }
        for (prefix, route) in [("/api/v1/sessions/", Route.session), ("/api/v1/operations/", Route.operation)] where path.hasPrefix(prefix) {
            let id = path.dropFirst(prefix.count)
            guard id.utf8.count == 36, id.utf8.allSatisfy(isIdentifierByte) else { return nil }
            return (route, String(id))
        }
        return nil
    }

    private static func isIdentifierByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"), UInt8(ascii: "-"):
            true
        default: false
        }
    }

    /// Whether a request with these fields is one answered here: no body, no upgrade, nothing to continue, and
    /// a connection the router keeps open after it.
    static func mayAnswer(_ fields: HTTPFields) -> Bool {
        fields[.contentLength] == nil && fields[.transferEncoding] == nil && fields[.upgrade] == nil && fields[.expect] == nil
            && !mayClose(fields)
    }

    /// Whether the router may end the connection after a request with these fields (it does on `Connection: close`;
    /// any value but `keep-alive` is taken as possibly that).
    static func mayClose(_ fields: HTTPFields) -> Bool {
        guard let connection = fields[.connection] else { return false }
        return connection.lowercased() != "keep-alive"
    }
}

/// The fast path in one connection's pipeline, right behind Hummingbird's `HTTPConnectionStateHandler` (so that
/// its idle timeout, graceful shutdown and request count see every request and answer) and in front of the
/// async channel Hummingbird reads requests from. A request answered here never reaches that channel; its answer
/// goes out through the same HTTP codec as the router's. ``ReadFastPathOrder`` keeps the answers in order.
final class ReadFastPathHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let fastPath: ReadFastPath
    private var order = ReadFastPathOrder()
    /// The answer of the request being read, written at its end.
    private var pending: ReadFastPath.Answer?

    init(_ fastPath: ReadFastPath) {
        self.fastPath = fastPath
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            // An unwritable channel (a client that does not read its answers) goes to the router, which waits for it.
            if order.mayAnswer, context.channel.isWritable, let answer = fastPath.answer(head) {
                order.held()
                pending = answer
                return
            }
            order.passed(mayClose: ReadFastPath.mayClose(head.headerFields))
            context.fireChannelRead(data)
        case .body:
            // Only a request passed on has a body: one answered here has neither a length nor a transfer coding.
            context.fireChannelRead(data)
        case .end:
            switch order.end() {
            case .pass:
                context.fireChannelRead(data)
            case .writeAnswer:
                guard let answer = pending else { return }
                pending = nil
                context.write(wrapOutboundOut(.head(answer.head)), promise: nil)
                context.write(wrapOutboundOut(.body(answer.body)), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { order.answerEnded() }
        context.write(data, promise: promise)
    }
}

/// Puts a ``ReadFastPathHandler`` behind Hummingbird's `HTTPConnectionStateHandler` as the first request
/// arrives, and leaves. Hummingbird adds extra handlers only in front of that handler, which would then never
/// see the requests answered here (and close a busy connection as idle).
final class ReadFastPathInstaller: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    private let fastPath: ReadFastPath

    init(_ fastPath: ReadFastPath) {
        self.fastPath = fastPath
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let pipeline = context.pipeline.syncOperations
        // Without the state handler (another Hummingbird), every request goes to the router.
        if let state = try? pipeline.handler(type: HTTPConnectionStateHandler.self) {
            try? pipeline.addHandler(ReadFastPathHandler(fastPath), position: .after(state))
        }
        context.fireChannelRead(data)
        pipeline.removeHandler(context: context, promise: nil)
    }
}

/// The `Date` header's value (RFC 9110's IMF-fixdate, as Hummingbird writes it), formatted once per second.
final class HTTPDate: Sendable {
    private let cached = Mutex<(second: Int, text: String)>((-1, ""))

    func now() -> String {
        let second = Int(Date().timeIntervalSince1970)
        if let text = cached.withLock({ $0.second == second ? $0.text : nil }) { return text }
        let text = Self.format(second)
        cached.withLock { $0 = (second, text) }
        return text
    }

    static func format(_ second: Int) -> String {
        var time = time_t(second)
        var parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
