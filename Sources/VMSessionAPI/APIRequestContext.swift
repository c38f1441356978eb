import Hummingbird
import HummingbirdWebSocket
import VMSessionCore
import VMSessionDaemon

/// The request context of every route the daemon serves, plain HTTP and WebSocket alike.
///
/// It exists so that one set of guards and one set of routes serve both, and so that a route learns who
/// calls from the context instead of checking the token itself: the access middleware of a route group
/// (``SessionAccess``, ``AdminAccess``) checks the token once and leaves the result in ``caller``.
/// A WebSocket upgrade (console, display) is first an ordinary GET that passes the same middleware; the
/// context carries the handler that runs once the connection is upgraded (``webSocket``).
public struct APIRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<APIRequestContext>
    /// Who calls, once an access middleware has checked the token; nil on public routes.
    public var caller: APICaller?

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
    }
}

/// A caller whose token was checked: the admin, or the holder of a session's token.
public struct APICaller: Sendable {
    public let role: SessionManager.Caller
    /// The token as presented; its hash names the owner of the event streams it opens.
    public let token: String
    /// The session named in the path, for routes under `/api/v1/sessions/{id}`.
    public let session: SessionID?
}

/// Lets a request through to the routes of `/api/v1/sessions/{id}/…` only with a token that may act on that
/// session: 401 without a valid token (first, so nobody learns which ids exist), 404 for an unknown
/// session, 403 for another session's token.
struct SessionAccess: RouterMiddleware {
    let manager: SessionManager

    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        let token = SessionsController.token(in: request)
        guard let text = context.parameters.get("id"), let id = SessionID(text) else {
            _ = try manager.caller(token: token)
            throw VMSessionError(.notFound, "There is no such session; session ids are UUIDs.")
        }
        // From the manager's read model: no round trip to the actor on any request.
        let role = try manager.authorize(token: token, for: id)
        var context = context
        context.caller = APICaller(role: role, token: token ?? "", session: id)
        return try await next(request, context)
    }
}

/// Lets a request through only with the admin token (the file in the daemon's state directory).
struct AdminAccess: RouterMiddleware {
    let manager: SessionManager

    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        let token = SessionsController.token(in: request)
        try manager.authorizeAdmin(token: token)
        var context = context
        context.caller = APICaller(role: .admin, token: token ?? "", session: nil)
        return try await next(request, context)
    }
}
