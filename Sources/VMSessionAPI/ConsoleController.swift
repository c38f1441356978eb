import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import ServiceLifecycle
import VMSessionCore
import VMSessionDaemon
import VMSessionHypervisor

/// The VM's serial console for web pages: `GET …/console` upgraded to a WebSocket (what xterm.js in
/// `vmsession.js` and the daemon's page speak; the messages are ``ConsoleProtocol``'s).
///
/// A thin harness over the ``ConsoleHub``: it checks the caller (token, origin: the same guards as every
/// route), joins the session's shared console as a writer or a read-only viewer, copies output to the client
/// and keystrokes to the console, and closes with a reason that says why it ended. A client whose token is
/// revoked is closed within 5 s, as its event streams are.
struct ConsoleController {
    let manager: SessionManager
    let hub: ConsoleHub

    static let consolePath = "/api/v1/sessions/:id/console"
    /// Output is sent in frames of at most this many bytes (the history can be large).
    static let frameBytes = 32 * 1024

    func addRoutes(http: Router<APIRequestContext>, webSocket: Router<APIRequestContext>) {
        let manager = manager
        let hub = hub
        // Reached without an upgrade, or when the upgrade was refused: the JSON error says why.
        http.group("/api/v1/sessions/:id", context: SessionRequestContext.self).get("console") { request, context -> Response in
            let target = try await Self.target(request, context, manager: manager)
            guard await hub.viewerCount(of: target.id) < hub.limits.viewers else { throw ConsoleHub.full }
            throw VMSessionError(
                .invalidUsage, "This is the console's WebSocket (output as binary frames, keystrokes back); open it with a WebSocket upgrade.")
        }
        webSocket.sessionWebSocket(
            RouterPath(Self.consolePath),
            shouldUpgrade: { request, context in
                guard let target = try? await Self.target(request, context, manager: manager),
                    await hub.viewerCount(of: target.id) < hub.limits.viewers
                else { return .dontUpgrade }
                return .upgrade([:])
            },
            onUpgrade: { inbound, outbound, context in
                // The token was checked again as the context was made; the console may have gone meanwhile.
                let viewer: ConsoleMultiplexer.Viewer
                do {
                    let target = try await Self.target(context.request, context.requestContext, manager: manager)
                    viewer = try await hub.join(target.id, endpoints: target.endpoints, mode: target.mode)
                } catch {
                    let reason = (error as? VMSessionError)?.message ?? "the console is not available"
                    await outbound.close(.policyViolation, fitting: reason)
                    return
                }
                defer { viewer.leave() }
                let caller = context.requestContext.caller
                let id = viewer.session
                let stillAllowed: @Sendable () async -> Bool = { caller.isStillAllowed }
                let ending = await Self.serve(viewer, inbound: inbound, outbound: outbound, stillAllowed: stillAllowed)
                context.logger.debug("console client left", metadata: ["session": "\(id)", "why": "\(ending)"])
                await ending.close(outbound)
            })
    }

    struct Target {
        let id: SessionID
        let endpoints: ConsoleEndpoints
        let mode: ConsoleProtocol.Mode
    }

    static func target(_ request: Request, _ context: SessionRequestContext, manager: SessionManager) async throws -> Target {
        let id = context.session
        let mode = try ConsoleProtocol.Mode(query: request.uri.queryParameters.get("mode"))
        return Target(id: id, endpoints: try await manager.consoleEndpoints(of: id), mode: mode)
    }

    /// How a client's connection ended.
    enum Ending: Sendable, CustomStringConvertible {
        case clientLeft
        case closed(ConsoleClose)

        var description: String {
            switch self {
            case .clientLeft: "client left"
            case .closed(let close): close.reason
            }
        }

        /// Sends the close frame, bounded in time (a client that does not read cannot take even that).
        func close(_ outbound: WebSocketOutboundWriter) async {
            guard case .closed(let close) = self else { return }
            await outbound.close(WebSocketErrorCode(codeNumber: Int(close.code)), fitting: close.reason)
        }
    }

    static func serve(
        _ viewer: ConsoleMultiplexer.Viewer, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter,
        stillAllowed: @escaping @Sendable () async -> Bool
    ) async -> Ending {
        await withTaskGroup(of: Ending.self) { group in
            // Output: hello, the history, then live output until the console drops this client or ends.
            group.addTask {
                do {
                    let hello = ConsoleControl.hello(mode: viewer.mode, history: viewer.history.count)
                    try await outbound.write(.text(String(decoding: try JSONEncoder().encode(hello), as: UTF8.self)))
                    for start in stride(from: 0, to: viewer.history.count, by: frameBytes) {
                        let end = min(start + frameBytes, viewer.history.count)
                        try await outbound.write(.binary(ByteBuffer(bytes: viewer.history[start..<end])))
                    }
                    // A batch is what came while the previous one was being written: its bytes go merged.
                    // Graceful shutdown makes the viewer leave (what is queued still goes out). Not
                    // `cancelOnGracefulShutdown()`: its merge passes every batch through a task of its own.
                    try await withGracefulShutdownHandler {
                        for await batch in viewer.output {
                            for output in batch {
                                switch output {
                                case .bytes(let bytes):
                                    // Slices of the batch's buffer, which viewers that keep up share: no copy per viewer.
                                    var rest = bytes
                                    while let frame = rest.readSlice(length: min(frameBytes, rest.readableBytes)), frame.readableBytes > 0 {
                                        try await outbound.write(.binary(frame))
                                    }
                                    viewer.sent(bytes.readableBytes)
                                case .control(let control):
                                    try await outbound.write(.text(String(decoding: try JSONEncoder().encode(control), as: UTF8.self)))
                                }
                            }
                        }
                    } onGracefulShutdown: {
                        viewer.leave()
                    }
                    if let reason = viewer.closeReason { return .closed(reason) }
                    return Task.isShuttingDownGracefully ? .closed(.shuttingDown) : .clientLeft
                } catch {
                    return viewer.closeReason.map(Ending.closed) ?? .clientLeft
                }
            }
            // Input: every frame's bytes are keystrokes (text or binary alike).
            group.addTask {
                do {
                    for try await frame in inbound {
                        try viewer.type(Array(frame.data.readableBytesView))
                    }
                } catch let refusal as ConsoleCloseError {
                    return .closed(refusal.close)
                } catch {}
                return .clientLeft
            }
            // The console may drop this client while a write to it is stuck; and the token may be revoked.
            group.addTask {
                var tick = 0
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    if let reason = viewer.closeReason { return .closed(reason) }
                    tick += 1
                    if tick % 5 == 0, !Task.isCancelled, await !stillAllowed() { return .closed(.revoked) }
                }
                return .clientLeft
            }
            let first = await group.next() ?? .clientLeft
            group.cancelAll()
            return first
        }
    }
}
