import Hummingbird
import HummingbirdWebSocket

/// The request context of every route the daemon serves, plain HTTP and WebSocket alike.
///
/// It exists so that one set of guards (Host, Origin, errors) and one set of routes can serve both: a
/// WebSocket upgrade (console, display) is first an ordinary GET that passes the same middleware, and the
/// context carries the handler that runs once the connection is upgraded (``webSocket``).
public struct APIRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<APIRequestContext>

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
    }
}
