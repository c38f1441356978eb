import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// The second floor of the SSE fan-out benchmark: the same fan-out as ``FanOutFloor`` on SwiftNIO, as the daemon
/// serves it (one event loop per core, NIO's HTTP/1.1 codec, the body chunked, one `execute` per loop per event, a
/// write and a flush per stream), and nothing else: no Hummingbird, no store, no JSON, no event hub.
///
/// Why it exists: the daemon's fan-out p99 is 2.6 to 2.9 times the poll(2) floor, and profiles spread the gap over
/// NIO's write path and the runtime. This server says how much of it NIO's own per-channel write and flush cost on
/// this machine, so the daemon's figure is read against what its framework costs, not only against a bare loop.
///
/// It speaks the same HTTP as ``FanOutFloor``: `GET …` opens a stream, `PUT …` with a body is fanned out as one SSE
/// frame and answered `200 {}`. It prints `listening on http://127.0.0.1:PORT` and runs until killed.
struct FanOutNIOFloor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout-nio-floor", abstract: "A SwiftNIO SSE server that only fans out: the framework's floor of the fan-out benchmark.")

    /// The streams of one event loop, touched only on that loop.
    final class LoopStreams {
        var streams: [ObjectIdentifier: ChannelHandlerContext] = [:]
    }

    /// Every loop's streams, fixed once the group is made.
    struct Registry: Sendable {
        let loops: [(loop: any EventLoop, streams: NIOLoopBound<LoopStreams>)]

        func streams(of loop: any EventLoop) -> LoopStreams? {
            loops.first { $0.loop === loop }?.streams.value
        }

        /// One `execute` per loop: every stream there writes the same bytes and flushes.
        func fanOut(_ frame: ByteBuffer) {
            for (loop, streams) in loops {
                loop.execute {
                    for context in streams.value.streams.values {
                        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(frame))), promise: nil)
                        context.flush()
                    }
                }
            }
        }
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let registry: Registry
        var head: HTTPRequestHead?
        var body = ByteBuffer()

        init(registry: Registry) { self.registry = registry }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body.clear()
            case .body(var part):
                body.writeBuffer(&part)
            case .end:
                guard let head else { return }
                if head.method == .GET {
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Type", value: "text/event-stream")
                    headers.add(name: "Cache-Control", value: "no-store")
                    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "retry: 2000\n\n")))), promise: nil)
                    registry.streams(of: context.eventLoop)?.streams[ObjectIdentifier(context.channel)] = context
                } else {
                    var frame = ByteBuffer(string: "event: propertyChanged\ndata: ")
                    frame.writeBuffer(&body)
                    frame.writeString("\n\n")
                    registry.fanOut(frame)
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Type", value: "application/json")
                    headers.add(name: "Content-Length", value: "2")
                    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                    context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "{}")))), promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                }
                self.head = nil
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            registry.streams(of: context.eventLoop)?.streams[ObjectIdentifier(context.channel)] = nil
            context.fireChannelInactive()
        }
    }

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        // A loop-bound value is made on its loop.
        let registry = Registry(
            loops: try group.makeIterator().map { loop in (loop, try loop.submit { NIOLoopBound(LoopStreams(), eventLoop: loop) }.wait()) })
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(registry: registry))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        FileHandle.standardOutput.write(Data("listening on http://127.0.0.1:\(channel.localAddress?.port ?? 0)\n".utf8))
        try channel.closeFuture.wait()
    }
}
