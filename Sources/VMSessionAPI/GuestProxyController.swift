import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization
import VMSessionCore
import VMSessionDaemon
import VMSessionMetrics

/// `…/api/v1/sessions/{id}/guest/{path}`: the guest's own HTTP API, reached through the daemon.
///
/// Why: the guest's server on port 80 knows nothing of sessions, tokens or web origins, and only the daemon
/// reaches it (a Unix socket of the daemon's user, see `GuestNetwork`). Through this route a request passes the same guards as every other
/// session route (Host, approved Origin with the daemon's CORS, the session's token), within the limits of
/// a ``GuestProxyPolicy``; bodies stream both ways, and the guest's headers are filtered on the way back,
/// its content sandboxed off the daemon's origin.
///
/// The policy's deadline covers the whole exchange: the request body's upload and the guest's head (the
/// client's deadline), then the guest's body as it is passed on (a race against the same instant). A slot
/// is held until the exchange ends, and given back at once when the daemon begins to shut down, or when
/// the page's connection closes while the guest's body is awaited (for a request without a body; see
/// the response's writer).
struct GuestProxyController {
    let sessions: SessionsController
    let policy: GuestProxyPolicy
    let gate: GuestProxyGate
    let metrics: DaemonMetrics

    init(sessions: SessionsController, policy: GuestProxyPolicy, metrics: DaemonMetrics) {
        self.sessions = sessions
        self.policy = policy
        self.metrics = metrics
        self.gate = GuestProxyGate(limit: policy.concurrentPerSession)
    }

    static let methods: [HTTPRequest.Method] = [.get, .post, .put, .delete, .patch]

    func addRoutes(to router: Router<APIRequestContext>) {
        // Counted before the session's context is made, so that a refused token is counted too.
        let guest = router.group("/api/v1/sessions/:id/guest").add(middleware: GuestAPICounter(metrics: metrics))
            .group(context: SessionRequestContext.self)
        for method in Self.methods {
            // The guest's root (`…/guest`, `…/guest/`) and every path below it (`**` needs one segment at least).
            guest.on("", method: method, use: forward)
            guest.on("**", method: method, use: forward)
        }
    }

    /// Counts each request by the status its caller gets: the guest's, or the daemon's refusal.
    struct GuestAPICounter: RouterMiddleware {
        let metrics: DaemonMetrics

        func handle(
            _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
        ) async throws -> Response {
            do {
                let response = try await next(request, context)
                metrics.guestAPIRequest(status: response.status.code)
                return response
            } catch {
                metrics.guestAPIRequest(status: (error as? VMSessionError)?.code.httpStatus.code ?? 500)
                throw error
            }
        }
    }

    @Sendable func forward(_ request: Request, context: SessionRequestContext) async throws -> Response {
        // Every refusal comes before the guest is touched: token (as the context was made), path, headers,
        // declared size, guest state, slot.
        let id = context.session
        let (path, query) = Self.split(request.head.path ?? "/")
        let target = try GuestProxyPolicy.guestTarget(rest: Self.rest(after: path), query: query)
        let incoming = request.headers.map { ($0.name.rawName, $0.value) }
        try policy.checkRequest(incoming)
        try policy.checkDeclaredLength(request.headers[.contentLength])
        let route = try await sessions.manager.guestAPIRoute(id)
        let slot = try gate.admit(id, policy: policy)
        let deadline = ContinuousClock.now + policy.timeout

        var outgoing = HTTPClientRequest(url: route.url(pathAndQuery: target))
        outgoing.method = HTTPMethod(rawValue: request.method.rawValue)
        for header in policy.requestHeaders(incoming, secret: context.caller.token) {
            outgoing.headers.add(name: header.name, value: header.value)
        }
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > 0 {
            outgoing.body = .stream(BoundedBody(base: request.body, policy: policy), length: .known(Int64(length)))
        } else if request.headers[.transferEncoding] != nil {
            outgoing.body = .stream(BoundedBody(base: request.body, policy: policy), length: .unknown)
        }
        let sendsBody = outgoing.body != nil
        let response: HTTPClientResponse
        do {
            let clientDeadline = NIODeadline.now() + Self.timeAmount(policy.timeout)
            let sending = outgoing
            response = try await cancelWhenGracefulShutdown {
                try await GuestAPIRoute.client.execute(sending, deadline: clientDeadline)
            }
        } catch {
            slot.release()
            throw Self.mapped(error, policy: policy)
        }
        var headers = HTTPFields()
        let base = "/api/v1/sessions/\(id)/guest"
        for header in policy.responseHeaders(response.headers.map { ($0.name, $0.value) }, base: base, target: target) {
            if let name = HTTPField.Name(header.name) { headers.append(HTTPField(name: name, value: header.value)) }
        }
        // Watching the page's connection (below) ends it with the answer: say so, so that no client reuses it.
        if !sendsBody { headers[.connection] = "close" }
        let length = response.headers.first(name: "content-length").flatMap { Int($0) }
        let body = response.body
        let logger = context.logger
        let timeout = policy.timeout
        return Response(
            status: .init(code: Int(response.status.code), reasonPhrase: response.status.reasonPhrase), headers: headers,
            body: ResponseBody(contentLength: length) { writer in
                defer { slot.release() }
                do {
                    // The page's connection is watched only when the request had no body: Hummingbird watches it
                    // by reading the request's own stream, which the upload to the guest has read already
                    // otherwise. A page that leaves mid-upload breaks the upload, which ends the exchange; one
                    // that leaves after sending a body, while the guest's answer stalls, holds its slot until
                    // the deadline.
                    let current = WriterBox(writer: writer)
                    if !sendsBody {
                        writer = try await request.body.consumeWithCancellationOnInboundClose { _ in
                            try await Self.pass(body, to: current, until: deadline)
                        }.writer
                    } else {
                        writer = try await Self.pass(body, to: current, until: deadline).writer
                    }
                } catch {
                    // The head is gone: all that is left is to cut the body short (the page sees a broken response).
                    logger.info(
                        "guest answer cut", metadata: ["session": "\(id)", "why": "\(Self.cutReason(error, timeout: timeout))"])
                    throw error
                }
                try await writer.finish(nil)
            })
    }

    /// Why a guest's body was cut short, for the log.
    static func cutReason(_ error: any Error, timeout: Duration) -> String {
        switch error {
        case is BodyDeadline: "the exchange passed its \(timeout.components.seconds) s limit"
        case is ShuttingDown: "the daemon is shutting down"
        case is CancellationError: "the page left"
        default: "\(error)"
        }
    }

    struct BodyDeadline: Error {}
    struct ShuttingDown: Error {}

    /// Copies the guest's body to the page until it ends, the deadline passes, or graceful shutdown begins
    /// (whichever comes first); the writer is used by one task at a time and handed back.
    static func pass(
        _ body: HTTPClientResponse.Body, to box: WriterBox, until deadline: ContinuousClock.Instant
    ) async throws -> WriterBox {
        return try await withThrowingTaskGroup(of: WriterBox?.self) { group in
            group.addTask {
                var writer = box.writer
                for try await chunk in body { try await writer.write(chunk) }
                return WriterBox(writer: writer)
            }
            group.addTask {
                try await Task.sleep(until: deadline)
                throw BodyDeadline()
            }
            group.addTask {
                try await gracefulShutdown()
                throw ShuttingDown()
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let done = first else { throw CancellationError() }
            return done
        }
    }

    /// The raw request target as path and query (percent-encoding kept, so the guest sees what the page sent).
    static func split(_ target: String) -> (path: Substring, query: String?) {
        guard let mark = target.firstIndex(of: "?") else { return (target[...], nil) }
        return (target[..<mark], String(target[target.index(after: mark)...]))
    }

    /// What follows `/api/v1/sessions/{id}/guest` in `path`: empty, or starting with `/`.
    static func rest(after path: Substring) -> String {
        // "", "api", "v1", "sessions", id, "guest": the rest begins at the sixth slash.
        var slashes = 0
        for index in path.indices where path[index] == "/" {
            slashes += 1
            if slashes == 6 { return String(path[index...]) }
        }
        return ""
    }

    static func timeAmount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .seconds(seconds) + .nanoseconds(attoseconds / 1_000_000_000)
    }

    /// The client's failures as the daemon's errors: too slow is 504, anything else the guest did is 502,
    /// and a request cut by the daemon's shutdown is 503.
    static func mapped(_ error: any Error, policy: GuestProxyPolicy) -> any Error {
        if Task.isShuttingDownGracefully {
            return VMSessionError(.unavailable, "The daemon is shutting down; try again once it is back.", retryAfterSeconds: 5)
        }
        switch error {
        case let error as VMSessionError: return error
        case is CancellationError: return error
        case let error as HTTPClientError where [.deadlineExceeded, .readTimeout, .connectTimeout].contains(error):
            return VMSessionError(
                .guestAPITimeout, "The guest's API did not answer within \(policy.timeout.components.seconds) seconds.", cause: error)
        default:
            return VMSessionError(.guestAPIFailed, "The guest's API broke the connection or did not answer with HTTP.", cause: error)
        }
    }
}

/// The proxied requests in flight, per session; the owner of the ``GuestProxyAdmission`` count.
final class GuestProxyGate: Sendable {
    private let admission: Mutex<GuestProxyAdmission>

    init(limit: Int) { admission = Mutex(GuestProxyAdmission(limit: limit)) }

    /// A slot for one request to `session`'s guest, or `too_many_requests` if it has all it may hold.
    func admit(_ session: SessionID, policy: GuestProxyPolicy) throws(VMSessionError) -> Slot {
        guard admission.withLock({ $0.admit(session) }) else {
            throw VMSessionError(
                .tooManyRequests,
                "At most \(policy.concurrentPerSession) requests to the session's guest may be in flight at once; wait for one to end.",
                retryAfterSeconds: 1)
        }
        return Slot(gate: self, session: session)
    }

    var inFlight: [SessionID: Int] { admission.withLock { $0.inFlight } }

    /// One admitted request. Released once, explicitly or, if a path forgot it, when it is dropped.
    final class Slot: Sendable {
        let gate: GuestProxyGate
        let session: SessionID
        private let released = Atomic(false)

        init(gate: GuestProxyGate, session: SessionID) {
            self.gate = gate
            self.session = session
        }

        func release() {
            guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
            gate.admission.withLock { $0.release(session) }
        }

        deinit { release() }
    }
}

/// A request body passed on as it arrives, cut off with `payload_too_large` once it passes the policy's limit
/// (a body sent chunked declares no length to refuse up front).
struct BoundedBody<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable where Base.Element == ByteBuffer {
    typealias Element = ByteBuffer
    let base: Base
    let policy: GuestProxyPolicy

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let policy: GuestProxyPolicy
        var count = 0

        mutating func next() async throws -> ByteBuffer? {
            guard let buffer = try await base.next() else { return nil }
            count += buffer.readableBytes
            if count > policy.maximumRequestBytes { throw policy.bodyTooLarge() }
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator(), policy: policy) }
}

/// A response's writer moved into the one child task that writes with it, and back (the parent only waits).
struct WriterBox: @unchecked Sendable {
    var writer: any ResponseBodyWriter
}
