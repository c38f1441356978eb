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
/// route), joins the session's shared console as a writer or a read-only viewer, hands the console the connection
/// to write output into (framed once for every client, on the connection's event loop), copies keystrokes to the
/// console, and closes with a reason that says why it ended. A client whose token is
/// revoked is closed within 5 s, as its event streams are.
struct ConsoleController {
    let manager: SessionManager
    let hub: ConsoleHub

    static let consolePath = "/api/v1/sessions/:id/console"
    /// Output is sent in frames of at most this many bytes (the history can be large; ``ConsoleMultiplexer/Framing/webSocket``).
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
                let caller = context.requestContext.caller
                let id = viewer.session
                let stillAllowed: @Sendable () async -> Bool = { caller.isStillAllowed }
                let ending = await Self.serve(viewer, connection: context.channel, inbound: inbound, outbound: outbound, stillAllowed: stillAllowed)
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

    /// Serves a joined viewer until its connection ends, and makes it leave the console: the one place that
    /// calls ``ConsoleMultiplexer/Viewer/leave()``, once, on every path.
    static func serve(
        _ viewer: ConsoleMultiplexer.Viewer, connection: any Channel, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter,
        stillAllowed: @escaping @Sendable () async -> Bool
    ) async -> Ending {
        // Output: hello, the history, then live output, all written into the connection by the console itself, on
        // the connection's event loop, until the console drops this client or ends (``ConsoleChannel``).
        let channel: ConsoleChannel
        do {
            channel = try await attach(viewer, to: connection)
        } catch {
            viewer.leave()
            return .closed(.failed)
        }
        let ending = await withTaskGroup(of: Ending.self) { group in
            // The console dropped this client or ended.
            group.addTask {
                await viewer.ended()
                return viewer.closeReason.map(Ending.closed) ?? .clientLeft
            }
            // Graceful shutdown: what was written still goes out, then the close (1000 in practice: the WebSocket
            // layer's own shutdown handler closes first; `.shuttingDown`'s 1001 where ours wins). (The hub, a
            // service shut down after the server, ends its consoles too late for this.)
            group.addTask {
                do {
                    try await gracefulShutdown()
                    return .closed(.shuttingDown)
                } catch {
                    return .clientLeft  // cancelled: another task ended the connection first
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
            // The token may be revoked.
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(5))
                    if !Task.isCancelled, await !stillAllowed() { return .closed(.revoked) }
                }
                return .clientLeft
            }
            let first = await group.next() ?? .clientLeft
            group.cancelAll()
            return first
        }
        // The viewer leaves before the console stops writing, so that no output is counted for it meanwhile; the
        // close frame, if any, goes after everything the console wrote, and nothing of it after the close.
        viewer.leave()
        await channel.stop()
        return ending
    }

    /// Attaches `viewer` to the upgraded `connection`, below its WebSocket frame encoder, on the connection's event
    /// loop: the console writes the hello, the history and then live output there, with no gap or repeat.
    static func attach(_ viewer: ConsoleMultiplexer.Viewer, to connection: any Channel) async throws -> ConsoleChannel {
        try await connection.eventLoop.submit {
            let encoder = try connection.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
            let channel = ConsoleChannel(writingBelow: encoder)
            viewer.attach(channel)
            return channel
        }.get()
    }
}

extension ConsoleMultiplexer.Framing {
    /// The console's WebSocket messages as a server sends them (RFC 6455, section 5.2: unmasked, no extension):
    /// output as binary frames of at most ``ConsoleController/frameBytes`` each, a control as one text frame of its
    /// JSON. Made here, once per chunk for every client, because NIO's `WebSocketFrameEncoder` frames inside each
    /// connection's pipeline, once per client.
    public static let webSocket = Self(
        output: { bytes in
            var frames = ByteBuffer()
            frames.reserveCapacity(bytes.readableBytes + 4 * (bytes.readableBytes / ConsoleController.frameBytes + 1))
            var rest = bytes
            while let frame = rest.readSlice(length: min(ConsoleController.frameBytes, rest.readableBytes)), frame.readableBytes > 0 {
                WebSocketFrameBytes.write(.binary, frame, into: &frames)
            }
            return frames
        },
        control: { control in
            var frame = ByteBuffer()
            WebSocketFrameBytes.write(.text, ByteBuffer(bytes: (try? JSONEncoder().encode(control)) ?? Data()), into: &frame)
            return frame
        })
}

/// One unmasked, final WebSocket frame, as a server writes it (RFC 6455, section 5.2).
enum WebSocketFrameBytes {
    static func write(_ opcode: WebSocketOpcode, _ payload: ByteBuffer, into buffer: inout ByteBuffer) {
        let length = payload.readableBytes
        buffer.writeInteger(UInt8(0x80) | UInt8(webSocketOpcode: opcode))
        switch length {
        case ..<126:
            buffer.writeInteger(UInt8(length))
        case ..<65536:
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(length))
        default:
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(length))
        }
        buffer.writeImmutableBuffer(payload)
    }
}
