import Hummingbird
import NIOCore
import HummingbirdWebSocket
import VMSessionCore
import VMSessionDaemon

/// The request context of every route the daemon serves, plain HTTP and WebSocket alike.
///
/// It exists so that one set of guards and one set of routes serve both. It knows what the request
/// presents (``Credentials``, read once by ``CredentialsReader``), not who calls: a route that needs a
/// caller lives in a group of a child context whose initializer checks the credentials and holds a caller
/// that cannot be missing (``SessionRequestContext``, ``AdminRequestContext``, ``PrivilegedRequestContext``).
/// A WebSocket upgrade (console, display) is first an ordinary GET that passes the same guards; the context
/// carries the handler that runs once the connection is upgraded (``webSocket``).
public struct APIRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<APIRequestContext>
    /// What the request presents; nil only on a router built without ``CredentialsReader`` (a wiring error).
    var credentials: Credentials?
    /// The connection: an upgraded console writes its output into it on its event loop (``ConsoleChannel``).
    let channel: any Channel

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
        self.channel = source.channel
    }

    /// The request's credentials, or an internal error on a router that never read them.
    func presented() throws(VMSessionError) -> Credentials {
        guard let credentials else {
            throw VMSessionError(.internalError, "The route was reached without its credentials being read.")
        }
        return credentials
    }
}

/// What a request presents to prove who calls: its token (`Authorization: Bearer`, or `?token=`) and the
/// web origin of the page that sent it, with what checks them (no actor hop per request).
struct Credentials: Sendable {
    let token: String?
    /// The page's web origin; nil for programs without one and for the daemon's own page.
    let origin: WebOrigin?
    let access: AccessRegistry
    let origins: OriginRegistry

    /// What `request` presents (here and on the read fast path, ``ReadFastPath``).
    init(of request: Request, access: AccessRegistry, origins: OriginRegistry) {
        var origin: WebOrigin?
        if let header = request.headers[.origin], !CORS.isSameOrigin(header, authority: request.head.authority) {
            origin = WebOrigin(header)
        }
        self.init(token: SessionsController.token(in: request), origin: origin, access: access, origins: origins)
    }

    init(token: String?, origin: WebOrigin?, access: AccessRegistry, origins: OriginRegistry) {
        self.token = token
        self.origin = origin
        self.access = access
        self.origins = origins
    }

    /// Who the token speaks for; `unauthorized` (401) without a valid token.
    func caller() throws(VMSessionError) -> AccessRegistry.Caller {
        try access.caller(token: token)
    }

    /// The caller of the session named `text` (the path's `id`): 401 without a valid token (first, so nobody
    /// learns which ids exist), 404 for an id that names no session, 403 for another session's token.
    func sessionCaller(_ text: String?) throws(VMSessionError) -> SessionCaller {
        guard let text, let id = SessionID(text) else {
            _ = try caller()
            throw VMSessionError(.notFound, "There is no such session; session ids are UUIDs.")
        }
        let role = try authorize(for: id)
        return SessionCaller(session: id, role: role, token: token ?? "", credentials: self)
    }

    /// Checks that the token may act on session `id` (its own token, or the admin token): 401, 404, 403.
    @discardableResult
    func authorize(for id: SessionID) throws(VMSessionError) -> AccessRegistry.Caller {
        try access.authorize(token: token, for: id)
    }

    /// Checks that the token is the admin token: 401 without a valid token, 403 for a session's.
    func requireAdmin() throws(VMSessionError) {
        try access.authorizeAdmin(token: token)
    }

    /// Whether the token is the admin token (no error either way).
    var isAdmin: Bool { (try? access.caller(token: token)) == .admin }

    /// A page (not the daemon's own) from an origin the user approved as privileged.
    var isPrivilegedOrigin: Bool { origin.map(origins.isPrivileged) ?? false }
}

/// Reads every request's ``Credentials`` into its context, once, for the child contexts to check.
struct CredentialsReader: RouterMiddleware {
    let access: AccessRegistry
    let origins: OriginRegistry

    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        context.credentials = Credentials(of: request, access: access, origins: origins)
        return try await next(request, context)
    }
}

/// The holder of a session's token (or the admin token) acting on the session named in the path.
public struct SessionCaller: Sendable {
    /// The session named in the path, which the token may act on.
    public let session: SessionID
    public let role: AccessRegistry.Caller
    /// The token as presented; its hash names the owner of the event streams it opens.
    public let token: String
    fileprivate let credentials: Credentials

    /// Whether the token may still act on the session (a long-lived connection asks again: revoked tokens
    /// and deleted sessions end it).
    public var isStillAllowed: Bool { (try? credentials.authorize(for: session)) != nil }
}

/// The context of the routes under `/api/v1/sessions/{id}/…`: built only for a token that may act on that
/// session (the initializer checks it, with ``Credentials/sessionCaller(_:)``'s status codes), so a handler
/// has its caller and never checks a token itself.
public struct SessionRequestContext: ChildRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let caller: SessionCaller

    public init(context: APIRequestContext) throws {
        coreContext = context.coreContext
        caller = try context.presented().sessionCaller(context.parameters.get("id"))
    }

    /// The session the path names, checked.
    public var session: SessionID { caller.session }
}

/// The context of the routes that need the admin token (the file in the daemon's state directory).
public struct AdminRequestContext: ChildRequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(context: APIRequestContext) throws {
        coreContext = context.coreContext
        try context.presented().requireAdmin()
    }
}

/// The context of the routes for the plugin's "privileged domain": a page whose origin the user approved as
/// privileged, or the admin token. Changing the idle-aware controller is one.
public struct PrivilegedRequestContext: ChildRequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(context: APIRequestContext) throws {
        coreContext = context.coreContext
        let credentials = try context.presented()
        if credentials.isPrivilegedOrigin { return }
        do throws(VMSessionError) {
            try credentials.requireAdmin()
        } catch {
            throw VMSessionError(
                error.code,
                error.message + " Changing the idle-aware controller needs the admin token, or a page whose origin the user "
                    + "approved as privileged (`vmsessionctl origins approve --privileged ORIGIN`).")
        }
    }
}
