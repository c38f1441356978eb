import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOPosix
import NIOWebSocket
import ServiceLifecycle
import Synchronization
import VMSessionCore
import VMSessionDaemon

/// The VM's screen for web pages: `GET …/display` bridges a WebSocket to QEMU's VNC socket (what noVNC
/// speaks), `GET …/screenshot` answers a PNG.
///
/// Every viewer gets its own connection to QEMU (QEMU serves many shared clients and paces each one by
/// how fast it reads), so a slow viewer slows only itself, and one that stops reading for
/// ``slowViewerLimit`` is dropped with a close reason; a viewer whose token is revoked is closed within
/// 5 s. Buffers are bounded both ways: frames from the viewer by the WebSocket configuration (64 KiB,
/// larger closes with 1009), bytes towards either side by NIO's back-pressure (a write waits until the
/// peer has taken the previous ones).
struct DisplayController {
    let manager: SessionManager
    let viewers: DisplayViewers

    /// How long a write to a viewer may wait for the viewer to read before the viewer is dropped.
    static let slowViewerLimit: Duration = .seconds(10)

    static let displayPath = "/api/v1/sessions/:id/display"

    func addRoutes(http: Router<APIRequestContext>, webSocket: Router<APIRequestContext>) {
        let manager = manager
        let viewers = viewers
        let session = http.group("/api/v1/sessions/:id", context: SessionRequestContext.self)
        // Reached without an upgrade, or when the upgrade was refused: the JSON error says why.
        session.get("display") { request, context -> Response in
            let target = try await target(request, context)
            guard viewers.hasRoom(target.id) else { throw DisplayViewers.full }
            throw VMSessionError(.invalidUsage, "This is the display's WebSocket (RFB, binary frames); open it with a WebSocket upgrade.")
        }
        session.get("screenshot") { request, context -> Response in
            let png = try await manager.screenshot(of: context.session)
            var headers = HTTPFields()
            headers[.contentType] = "image/png"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: png)))
        }
        webSocket.sessionWebSocket(
            RouterPath(Self.displayPath),
            shouldUpgrade: { request, context in
                guard let target = try? await target(request, context), viewers.hasRoom(target.id) else { return .dontUpgrade }
                // noVNC before 1.4 asks for the `binary` subprotocol; the browser fails a connection that does not echo it.
                var headers = HTTPFields()
                if let asked = request.headers[.secWebSocketProtocol],
                    asked.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == "binary" })
                {
                    headers[.secWebSocketProtocol] = "binary"
                }
                return .upgrade(headers)
            },
            refusal: { _ in "the display is not available" },
            onUpgrade: { inbound, outbound, context in
                let logger = context.logger
                // The token was checked again as the context was made; the VM may have stopped meanwhile.
                guard let target = try? await Self.target(context.request, context.requestContext, manager: manager) else {
                    try await outbound.close(.policyViolation, reason: "the display is not available")
                    return
                }
                guard viewers.acquire(target.id) else {
                    try await outbound.close(.policyViolation, reason: "too many viewers on this display")
                    return
                }
                defer { viewers.release(target.id) }
                // A revoked token (or a deleted session) ends its viewers too, as it ends its event streams.
                let caller = context.requestContext.caller
                let stillAllowed: @Sendable () async -> Bool = { caller.isStillAllowed }
                let ending = await Self.bridge(
                    inbound: inbound, outbound: outbound, socket: target.socket, mode: target.mode, stillAllowed: stillAllowed)
                logger.debug("display viewer left", metadata: ["session": "\(target.id)", "why": "\(ending)"])
                await ending.close(outbound)
            })
    }

    /// The session, its display socket and the viewer's mode.
    struct Target {
        let id: SessionID
        let socket: String
        let mode: RFBViewerFilter.Mode
    }

    func target(_ request: Request, _ context: SessionRequestContext) async throws -> Target {
        try await Self.target(request, context, manager: manager)
    }

    static func target(_ request: Request, _ context: SessionRequestContext, manager: SessionManager) async throws -> Target {
        let id = context.session
        let mode: RFBViewerFilter.Mode
        switch request.uri.queryParameters.get("mode") {
        case nil, "write": mode = .interactive
        case "read": mode = .readOnly
        case let other?: throw VMSessionError(.invalidArgument, "'mode' must be 'read' or 'write'; got '\(other)'.")
        }
        return Target(id: id, socket: try await manager.displaySocket(of: id), mode: mode)
    }

    // MARK: The bridge

    /// How a viewer's connection ended, and what it is told.
    enum Ending: Sendable, CustomStringConvertible {
        case viewerLeft
        case displayClosed
        case displayUnavailable(String)
        case refused(String)
        case tooSlow
        case revoked
        case shuttingDown
        case failed(String)

        var description: String {
            switch self {
            case .viewerLeft: "viewer left"
            case .displayClosed: "display closed"
            case .displayUnavailable(let why): "display unavailable: \(why)"
            case .refused(let why): "refused: \(why)"
            case .tooSlow: "too slow"
            case .revoked: "token revoked"
            case .shuttingDown: "the daemon is shutting down"
            case .failed(let why): "failed: \(why)"
            }
        }

        /// Sends the close frame (bounded in time: a viewer that does not read cannot take even that).
        func close(_ outbound: WebSocketOutboundWriter) async {
            let (code, reason): (WebSocketErrorCode, String)
            switch self {
            case .viewerLeft: return
            case .displayClosed: (code, reason) = (.goingAway, "the VM's display closed (the VM stopped or was hibernated)")
            case .displayUnavailable: (code, reason) = (.unexpectedServerError, "cannot reach the VM's display")
            case .refused(let why): (code, reason) = (.policyViolation, why)
            case .tooSlow: (code, reason) = (.policyViolation, "viewer too slow: it read nothing for 10 s")
            case .revoked: (code, reason) = (.policyViolation, "the token was revoked or the session deleted")
            case .shuttingDown: (code, reason) = (.goingAway, "the daemon is shutting down (the VM goes on)")
            case .failed: (code, reason) = (.unexpectedServerError, "the display connection failed")
            }
            await outbound.close(code, fitting: reason)
        }
    }

    /// Connects to QEMU's VNC socket. QEMU listens with a backlog of one, so viewers connecting at once (a page
    /// and a read-only viewer opened together) can find the queue full: a non-blocking connect then fails with
    /// EAGAIN although the display is there. That is retried for up to 2 s; any other failure is final.
    static func connectToDisplay(_ socket: String) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        var attempt = 0
        while true {
            do {
                return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connect(unixDomainSocketPath: socket) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                        }
                    }
            } catch let error as IOError where error.errnoCode == EAGAIN && attempt < 100 {
                attempt += 1
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    /// Copies bytes both ways between one viewer and a fresh connection to QEMU's VNC socket, until either
    /// side ends, the viewer sends what it may not, or it stops reading.
    static func bridge(
        inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, socket: String, mode: RFBViewerFilter.Mode,
        stillAllowed: @escaping @Sendable () async -> Bool
    ) async -> Ending {
        let vnc: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            vnc = try await connectToDisplay(socket)
        } catch {
            return .displayUnavailable("\(error)")
        }
        let writeStarted = WriteWatch()
        do {
            return try await vnc.executeThenClose { fromQEMU, toQEMU in
                // The stream is read by the one child task below and by nothing else.
                let fromQEMU = OneReader(stream: fromQEMU)
                return await withTaskGroup(of: Ending.self) { group in
                    group.addTask {
                        do {
                            for try await buffer in fromQEMU.stream {
                                writeStarted.begin()
                                try await outbound.write(.binary(buffer))
                                writeStarted.end()
                            }
                            return .displayClosed
                        } catch {
                            return Task.isCancelled ? .viewerLeft : .failed("to the viewer: \(error)")
                        }
                    }
                    group.addTask {
                        var filter = RFBViewerFilter(mode: mode)
                        do {
                            for try await frame in inbound {
                                guard frame.opcode == .binary || frame.opcode == .continuation else {
                                    return .refused("the display takes binary frames only")
                                }
                                let bytes = try filter.filter(frame.data.readableBytesView)
                                if !bytes.isEmpty { try await toQEMU.write(ByteBuffer(bytes: bytes)) }
                            }
                            return .viewerLeft
                        } catch let refusal as RFBViewerFilter.Refusal {
                            return .refused(refusal.reason)
                        } catch {
                            return Task.isCancelled ? .viewerLeft : .displayClosed
                        }
                    }
                    group.addTask {
                        var tick = 0
                        while !Task.isCancelled {
                            try? await Task.sleep(for: .seconds(1))
                            if writeStarted.pending(longerThan: slowViewerLimit) { return .tooSlow }
                            tick += 1
                            if tick % 5 == 0, !Task.isCancelled, await !stillAllowed() { return .revoked }
                        }
                        return .viewerLeft
                    }
                    // Graceful shutdown waits for every connection: a viewer ends with it (the VM goes on).
                    group.addTask {
                        do {
                            try await gracefulShutdown()
                            return .shuttingDown
                        } catch {
                            return .viewerLeft
                        }
                    }
                    let first = await group.next() ?? .viewerLeft
                    group.cancelAll()
                    return first
                }
            }
        } catch {
            return .failed("\(error)")
        }
    }
}

/// When the write to a viewer that has not finished began, shared by the writer and its watchdog.
private final class WriteWatch: Sendable {
    private let started = Mutex<ContinuousClock.Instant?>(nil)
    func begin() { started.withLock { $0 = .now } }
    func end() { started.withLock { $0 = nil } }
    func pending(longerThan limit: Duration) -> Bool {
        started.withLock { $0.map { $0.duration(to: .now) > limit } ?? false }
    }
}

/// Hands QEMU's inbound stream (not Sendable, since two readers would split its bytes) to the one task that reads it.
private struct OneReader: @unchecked Sendable {
    let stream: NIOAsyncChannelInboundStream<ByteBuffer>
}

/// How many viewers each session's display has, so that one page cannot open connections to QEMU without end.
final class DisplayViewers: Sendable {
    let perSession: Int
    private let counts = Mutex<[SessionID: Int]>([:])

    init(perSession: Int = 16) {
        self.perSession = perSession
    }

    static var full: VMSessionError {
        VMSessionError(.tooManyStreams, "This display has its maximum of viewers; close one first.", retryAfterSeconds: 5)
    }

    func hasRoom(_ id: SessionID) -> Bool { counts.withLock { $0[id, default: 0] < perSession } }

    /// Viewers of every display now (the metrics).
    var total: Int { counts.withLock { $0.values.reduce(0, +) } }

    func acquire(_ id: SessionID) -> Bool {
        counts.withLock { counts in
            guard counts[id, default: 0] < perSession else { return false }
            counts[id, default: 0] += 1
            return true
        }
    }

    func release(_ id: SessionID) {
        counts.withLock { counts in
            let count = counts[id, default: 1] - 1
            counts[id] = count > 0 ? count : nil
        }
    }
}
