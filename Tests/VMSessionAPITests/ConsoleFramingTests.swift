import Foundation
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing
import VMSessionCore
import VMSessionDaemon
@testable import VMSessionAPI

/// The console's frames, made once for every client, are what NIO's own WebSocket decoder reads back.
@Suite("Console WebSocket framing")
struct ConsoleFramingTests {
    /// Decodes `bytes` as a client would, with NIO's decoder.
    static func decode(_ bytes: ByteBuffer) throws -> [WebSocketFrame] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 20)))
        defer { _ = try? channel.finish() }
        try channel.writeInbound(bytes)
        var frames: [WebSocketFrame] = []
        while let frame = try channel.readInbound(as: WebSocketFrame.self) { frames.append(frame) }
        return frames
    }

    @Test(
        "output of every length becomes final, unmasked binary frames of at most 32 KiB that carry it in order",
        arguments: [1, 125, 126, 127, 65535, 65536, 100_000])
    func outputFrames(length: Int) throws {
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let frames = try Self.decode(ConsoleMultiplexer.Framing.webSocket.output(ByteBuffer(bytes: payload)))
        #expect(frames.count == (length + ConsoleController.frameBytes - 1) / ConsoleController.frameBytes)
        #expect(frames.allSatisfy { $0.fin && $0.opcode == .binary && $0.maskKey == nil && $0.data.readableBytes <= ConsoleController.frameBytes })
        #expect(frames.flatMap { Array($0.data.readableBytesView) } == payload)
    }

    @Test("a control is one text frame of its JSON")
    func controlFrame() throws {
        let frames = try Self.decode(ConsoleMultiplexer.Framing.webSocket.control(.notice("the VM is not running")))
        let frame = try #require(frames.first)
        #expect(frames.count == 1 && frame.fin && frame.opcode == .text)
        #expect(try JSONDecoder().decode(ConsoleControl.self, from: Data(frame.data.readableBytesView)) == .notice("the VM is not running"))
    }

    @Test("empty output is no frame at all")
    func emptyOutput() throws {
        #expect(ConsoleMultiplexer.Framing.webSocket.output(ByteBuffer()).readableBytes == 0)
    }
}
