import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import Synchronization
import VMSessionCore
import VMSessionDaemon

/// `…/api/v1/sessions/{id}/guest/{path}`: the guest's own HTTP API, reached through the daemon.
///
/// Why: the guest's server on port 80 knows nothing of sessions, tokens or web origins, and its raw forward
/// on the loopback answers anyone. Through this route a request passes the same guards as every other
/// session route (Host, approved Origin with the daemon's CORS, the session's token), within the limits of
/// a ``GuestProxyPolicy``; bodies stream both ways, and the guest's headers are filtered on the way back.
struct GuestProxyController {
    let sessions: SessionsController
    let policy: GuestProxyPolicy
    let gate: GuestProxyGate

    init(sessions: SessionsController, policy: GuestProxyPolicy) {
        self.sessions = sessions
        self.policy = policy
        self.gate = GuestProxyGate(limit: policy.concurrentPerSession)
    }

    static let methods: [HTTPRequest.Method] = [.get, .post, .put, .delete, .patch]

    func addRoutes(to router: Router<APIRequestContext>) {
        for method in Self.methods {
            // The guest's root (`…/guest`, `…/guest/`) and every path below it (`**` needs one segment at least).
            router.on("/api/v1/sessions/:id/guest", method: method, use: proxy)
            router.on("/api/v1/sessions/:id/guest/**", method: method, use: proxy)
        }
    }

    /// One client for every guest: redirects and compressed bodies are the page's business, passed through as they are.
    static let client = HTTPClient(
        eventLoopGroup: HTTPClient.defaultEventLoopGroup,
        configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5)), decompression: .disabled))

    @Sendable func proxy(_ request: Request, context: APIRequestContext) async throws -> Response {
        // Every refusal comes before the guest is touched: token, path, declared size, guest state, slot.
        let id = try await sessions.authorizedSession(request, context)
        let (path, query) = Self.split(request.head.path ?? "/")
        let target = try GuestProxyPolicy.guestTarget(rest: Self.rest(after: path), query: query)
        try policy.checkDeclaredLength(request.headers[.contentLength])
        let route = try await sessions.manager.guestAPIRoute(id)
        let slot = try gate.admit(id, policy: policy)

        var outgoing = HTTPClientRequest(url: route.url(pathAndQuery: target))
        outgoing.method = HTTPMethod(rawValue: request.method.rawValue)
        for header in policy.requestHeaders(request.headers.map { ($0.name.rawName, $0.value) }) {
            outgoing.headers.add(name: header.name, value: header.value)
        }
        if let length = request.headers[.contentLength].flatMap({ Int($0) }) {
            outgoing.body = .stream(BoundedBody(base: request.body, policy: policy), length: .known(Int64(length)))
        } else if request.headers[.transferEncoding] != nil {
            outgoing.body = .stream(BoundedBody(base: request.body, policy: policy), length: .unknown)
        }
        let response: HTTPClientResponse
        do {
            response = try await Self.client.execute(outgoing, deadline: .now() + Self.timeAmount(policy.timeout))
        } catch {
            slot.release()
            throw Self.mapped(error, policy: policy)
        }
        var headers = HTTPFields()
        let base = "/api/v1/sessions/\(id)/guest"
        for header in policy.responseHeaders(response.headers.map { ($0.name, $0.value) }, base: base) {
            if let name = HTTPField.Name(header.name) { headers.append(HTTPField(name: name, value: header.value)) }
        }
        let length = response.headers.first(name: "content-length").flatMap { Int($0) }
        let body = response.body
        // The slot is held until the guest's last byte was passed on (or the client went away).
        return Response(
            status: .init(code: Int(response.status.code), reasonPhrase: response.status.reasonPhrase), headers: headers,
            body: ResponseBody(contentLength: length) { writer in
                defer { slot.release() }
                for try await chunk in body { try await writer.write(chunk) }
                try await writer.finish(nil)
            })
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

    /// The client's failures as the daemon's errors: too slow is 504, anything else the guest did is 502.
    static func mapped(_ error: any Error, policy: GuestProxyPolicy) -> any Error {
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
