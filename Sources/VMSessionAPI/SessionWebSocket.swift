import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import VMSessionCore

/// What a session's WebSocket handler gets once the connection is upgraded: the upgrade's request, and the
/// session's context built again at that moment (the session may have been deleted, or the token revoked,
/// since the upgrade was accepted).
struct SessionWebSocketContext: Sendable {
    let request: Request
    let requestContext: SessionRequestContext
    /// The upgraded connection.
    let channel: any Channel
    var logger: Logger { requestContext.logger }
}

extension Router where Context == APIRequestContext {
    /// A WebSocket route under `/api/v1/sessions/{id}/…` whose handlers get a ``SessionRequestContext``, as
    /// the HTTP routes of a session's group do.
    ///
    /// Why not a route group of that context: hummingbird-websocket hands an upgraded connection the context
    /// of the router that accepted it, which must be made from the connection (`WebSocketRequestContext`),
    /// and a child context is made from its parent. So the child is made here, from the parent, in both
    /// steps: before the upgrade (a refusal is no upgrade; the same URL as a plain GET says why) and after
    /// it (a refusal closes the connection with `.policyViolation` and `refusal`'s reason).
    func sessionWebSocket(
        _ path: RouterPath,
        shouldUpgrade: @escaping @Sendable (Request, SessionRequestContext) async throws -> RouterShouldUpgrade,
        refusal: @escaping @Sendable (any Error) -> String = { ($0 as? VMSessionError)?.message ?? "the session is not available" },
        onUpgrade: @escaping @Sendable (WebSocketInboundStream, WebSocketOutboundWriter, SessionWebSocketContext) async throws -> Void
    ) {
        ws(
            path,
            shouldUpgrade: { request, context in
                try await shouldUpgrade(request, try SessionRequestContext(context: context))
            },
            onUpgrade: { inbound, outbound, context in
                let session: SessionRequestContext
                do {
                    session = try SessionRequestContext(context: context.requestContext)
                } catch {
                    await outbound.close(.policyViolation, fitting: refusal(error))
                    return
                }
                try await onUpgrade(inbound, outbound, SessionWebSocketContext(request: context.request, requestContext: session, channel: context.requestContext.channel))
            })
    }
}
