import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
import VMSessionCore
import VMSessionHypervisor
@testable import VMSessionDaemon

/// The console's multiplexer on real parts: a real log file appended to as QEMU appends to it, a real Unix
/// socket served by the test where QEMU's console socket would be, and each client on a real Unix socket pair
/// whose daemon end the console writes into, as the daemon's handler attaches it (``Client``). (The real QEMU
/// and WebSocket are in the browser tests, Tests/Browser/test_console.py.)
@Suite("Console multiplexer")
struct ConsoleMultiplexerTests {
    /// A console's files in a fresh short directory (Unix socket paths are short), removed at the end.
    final class Fixture: Sendable {
        let directory: String
        let endpoints: ConsoleEndpoints
        let log: FileHandle

        init(_ initial: String = "") throws {
            directory = "/tmp/vms-console-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            endpoints = ConsoleEndpoints(log: directory + "/console.log", socket: directory + "/console.sock")
            FileManager.default.createFile(atPath: endpoints.log, contents: Data(initial.utf8))
            log = try FileHandle(forWritingTo: URL(fileURLWithPath: endpoints.log))
            try log.seekToEnd()
        }

        /// What the guest prints: appended to the log, as QEMU does.
        func guestPrints(_ text: String) throws { try log.write(contentsOf: Data(text.utf8)) }

        func multiplexer(_ limits: ConsoleMultiplexer.Limits = .defaults, framing: ConsoleMultiplexer.Framing = .tagged) throws -> ConsoleMultiplexer {
            try ConsoleMultiplexer(session: SessionID(), endpoints: endpoints, limits: limits, framing: framing, logger: Logger(label: "test"))
        }

        deinit {
            try? log.close()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// A value shared between a test and the tasks it starts.
    final class Shared<Value: Sendable>: Sendable {
        private let value: Mutex<Value>
        init(_ value: Value) { self.value = Mutex(value) }
        func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result { value.withLock { body(&$0) } }
    }

    /// A message of the ``ConsoleMultiplexer/Framing/tagged`` framing, as a client reads it.
    enum Message: Equatable, Sendable {
        case output([UInt8])
        case control(ConsoleControl)

        /// Output of `text`'s bytes.
        static func printed(_ text: String) -> Message { .output(Array(text.utf8)) }

        /// The next whole message at the front of `buffer`, taken off it; nil until one is there.
        static func read(from buffer: inout ByteBuffer) -> Message? {
            guard let tag = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
                let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt32.self),
                buffer.readableBytes >= 5 + Int(length)
            else { return nil }
            buffer.moveReaderIndex(forwardBy: 5)
            let payload = buffer.readBytes(length: Int(length)) ?? []
            guard tag == ConsoleMultiplexer.Framing.controlTag else { return .output(payload) }
            guard let control = try? JSONDecoder().decode(ConsoleControl.self, from: Data(payload)) else {
                Issue.record("a control that is not ConsoleControl's JSON: \(String(decoding: payload, as: UTF8.self))")
                return .output(payload)
            }
            return .control(control)
        }
    }

    /// Where a protocol's frame encoder sits in a client's pipeline; the console writes below it, so it never
    /// sees a write (one that reached it would fail the test).
    final class EncoderStandIn: ChannelOutboundHandler, Sendable {
        typealias OutboundIn = Never
    }

    /// One client of the console over a real Unix socket pair, as the daemon's handler serves it: the daemon's end
    /// of the pair is attached to the viewer (below a stand-in for the protocol's encoder), and the client's end
    /// reads what the console wrote, or never reads (`reads: false`: the kernel's buffers fill, then the
    /// daemon's). Both ends close when the client is released.
    final class Client: Sendable {
        let viewer: ConsoleMultiplexer.Viewer
        /// The daemon's end, which the console writes into.
        let connection: any Channel
        /// The client's end.
        let peer: any Channel
        private let received: Shared<Received>

        /// What the client's end read so far.
        struct Received: Sendable {
            var messages: [Message] = []
            /// Bytes of output among them (counted as they come: tests poll it while megabytes arrive).
            var outputBytes = 0
        }

        init(_ viewer: ConsoleMultiplexer.Viewer, reads: Bool = true) async throws {
            var ends: [CInt] = [-1, -1]
            try #require(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &ends) == 0, "a socket pair: \(String(cString: strerror(errno)))")
            let (daemonEnd, clientEnd) = (ends[0], ends[1])
            let received = Shared(Received())
            self.viewer = viewer
            self.received = received
            do {
                connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EncoderStandIn()) }
                    }
                    .withConnectedSocket(daemonEnd).get()
            } catch {
                close(daemonEnd)
                close(clientEnd)
                throw error
            }
            do {
                peer = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelOption(.autoRead, value: reads)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Reader(received: received)) }
                    }
                    .withConnectedSocket(clientEnd).get()
            } catch {
                connection.close(promise: nil)
                close(clientEnd)
                throw error
            }
            let connection = connection
            try await connection.eventLoop.submit {
                let encoder = try connection.pipeline.syncOperations.context(handlerType: EncoderStandIn.self)
                viewer.attach(ConsoleChannel(writingBelow: encoder))
            }.get()
        }

        deinit {
            connection.close(promise: nil)
            peer.close(promise: nil)
        }

        /// Every message read so far, in order.
        var messages: [Message] { received.withLock { $0.messages } }
        /// How many bytes of output were read so far.
        var outputBytes: Int { received.withLock { $0.outputBytes } }
        /// The output bytes read so far: the history, then live output.
        var bytes: [UInt8] {
            received.withLock { $0.messages.flatMap { message -> [UInt8] in if case .output(let bytes) = message { bytes } else { [] } } }
        }
        var controls: [ConsoleControl] {
            received.withLock { $0.messages.compactMap { message in if case .control(let control) = message { control } else { nil } } }
        }
        /// What the client's screen shows: the history and the live output.
        var text: String { String(decoding: bytes, as: UTF8.self) }
        /// The output after the history (whose size the hello says).
        var live: String { String(decoding: bytes.dropFirst(controls.first?.history ?? 0), as: UTF8.self) }
        var notices: [String] { controls.filter { $0.type == .notice }.map { $0.message ?? "" } }

        /// Reads the client's end: the tagged messages, whole, into `received`.
        final class Reader: ChannelInboundHandler {
            typealias InboundIn = ByteBuffer
            let received: Shared<Received>
            var buffer = ByteBuffer()
            init(received: Shared<Received>) { self.received = received }
            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                var bytes = unwrapInboundIn(data)
                buffer.writeBuffer(&bytes)
                var messages: [Message] = []
                var outputBytes = 0
                while let message = Message.read(from: &buffer) {
                    if case .output(let bytes) = message { outputBytes += bytes.count }
                    messages.append(message)
                }
                buffer.discardReadBytes()
                received.withLock {
                    $0.messages += messages
                    $0.outputBytes += outputBytes
                }
            }
        }
    }

    /// Waits for `condition`, up to a minute: a guard against a hang, not a speed limit. At the start of
    /// `make test` some 300 tests start at once on two cores, and CI saw 300 ms steps take 16 s.
    static func eventually(_ what: Comment, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while !condition() {
            guard ContinuousClock.now < deadline else {
                Issue.record("timed out waiting: \(what)")
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    @Test("a viewer gets the hello, what the guest printed before it came, then live output, with no gap and no repeat")
    func historyThenLive() async throws {
        let fixture = try Fixture("booted\r\n")
        let console = try fixture.multiplexer()
        defer { console.end(.sessionClosed) }
        let first = try await Client(try #require(console.join(.write)))
        #expect(String(decoding: first.viewer.history, as: UTF8.self) == "booted\r\n")
        try fixture.guestPrints("/ # echo $((6*7))\r\n42\r\n")
        try await Self.eventually("the first viewer sees the live line") { first.live.contains("42") }
        #expect(Array(first.messages.prefix(2)) == [.control(.hello(mode: .write, history: 8)), .printed("booted\r\n")],
                "the hello says how much history follows, and the history follows")
        let second = try await Client(try #require(console.join(.read)))
        #expect(String(decoding: second.viewer.history, as: UTF8.self) == "booted\r\n/ # echo $((6*7))\r\n42\r\n",
                "a viewer that came later sees the line printed before it connected")
        try fixture.guestPrints("/ # ")
        try await Self.eventually("both see the prompt") { first.text.hasSuffix("/ # ") && second.text.hasSuffix("/ # ") }
        #expect(first.text == "booted\r\n/ # echo $((6*7))\r\n42\r\n/ # ")
        #expect(second.text == first.text, "the same screen for both")
        #expect(second.controls == [.hello(mode: .read, history: 31)])
    }

    @Test("lines written while the console attaches are neither lost nor repeated")
    func attachRace() async throws {
        let fixture = try Fixture()
        let writer = Task.detached {
            for line in 0..<2000 { try? fixture.guestPrints("line \(line)\n") }
        }
        try await Task.sleep(for: .milliseconds(2))
        let console = try fixture.multiplexer()
        defer { console.end(.sessionClosed) }
        let viewer = try await Client(try #require(console.join(.read)))
        await writer.value
        try await Self.eventually("every line arrived") { viewer.text.hasSuffix("line 1999\n") }
        let lines = viewer.text.split(separator: "\n")
        #expect(lines == (0..<2000).map { "line \($0)" }[...].suffix(lines.count), "in order, none twice, none missing")
        #expect(lines.count == 2000)
    }

    @Test("what comes before a viewer is attached is written as it attaches: the bytes merged into one frame, a notice in its place, nothing lost when the console ended meanwhile")
    func queuedUntilAttached() async throws {
        let fixture = try Fixture()
        let console = try fixture.multiplexer()
        let viewer = try #require(console.join(.write))
        // A byte at a time, as QEMU writes its log, while the viewer's handler has not attached it yet.
        let before = (0..<200).map { "\($0) " }.joined()
        for byte in before.utf8 { console.deliver([byte]) }
        console.notice("the VM is not running")
        console.deliver(Array("after".utf8))
        console.end(.sessionClosed)
        let client = try await Client(viewer)
        try await Self.eventually("the client read the four messages") { client.messages.count >= 4 }
        #expect(client.messages == [
            .control(.hello(mode: .write, history: 0)), .printed(before), .control(.notice("the VM is not running")), .printed("after"),
        ])
        #expect(viewer.closeReason == .sessionClosed)
        await viewer.ended()
    }

    @Test("every viewer's queue holds the same buffer for a chunk, not a copy; a viewer with several chunks queued gets them merged")
    func queuedChunkSharedByViewers() async throws {
        let fixture = try Fixture()
        let framed = Shared<[(address: Int, text: String)]>([])
        let framing = ConsoleMultiplexer.Framing(
            output: { bytes in
                let address = bytes.withUnsafeReadableBytes { Int(bitPattern: $0.baseAddress) }
                framed.withLock { $0.append((address, String(buffer: bytes))) }
                return ConsoleMultiplexer.Framing.tagged.output(bytes)
            },
            control: ConsoleMultiplexer.Framing.tagged.control)
        let console = try fixture.multiplexer(framing: framing)
        defer { console.end(.sessionClosed) }
        let viewers = try (0..<50).map { _ in try #require(console.join(.read)) }
        console.deliver(Array("one chunk".utf8))
        var clients: [Client] = []
        for viewer in viewers { clients.append(try await Client(viewer)) }
        let queued = framed.withLock { $0 }
        #expect(queued.count == 50 && queued.allSatisfy { $0.text == "one chunk" })
        #expect(queued.first?.address != 0 && Set(queued.map(\.address)).count == 1, "every viewer's queue held the one buffer")
        let behind = try #require(console.join(.read))
        console.deliver(Array("two".utf8))
        console.deliver(Array(" chunks".utf8))
        let last = try await Client(behind)
        try await Self.eventually("the last client read the hello, the history and one frame") { last.messages.count >= 3 }
        #expect(last.messages == [.control(.hello(mode: .read, history: 9)), .printed("one chunk"), .printed("two chunks")],
                "the history, then the two queued chunks as one")
        for client in clients {
            try await Self.eventually("the attached clients got the live chunks") { client.text == "one chunktwo chunks" }
        }
    }

    @Test("a viewer dropped for being slow before it attached is not written what was queued for it; the others are")
    func slowViewerLosesItsQueue() async throws {
        let fixture = try Fixture()
        var limits = ConsoleMultiplexer.Limits.defaults
        limits.viewerBufferBytes = 1024
        let console = try fixture.multiplexer(limits)
        defer { console.end(.sessionClosed) }
        let slow = try #require(console.join(.read))
        let other = try await Client(try #require(console.join(.read)))
        console.deliver([UInt8](repeating: 65, count: 1000))
        try await Self.eventually("the other client's socket took the first chunk") { other.viewer.unsentBytes == 0 }
        console.deliver([UInt8](repeating: 66, count: 1000))
        #expect(slow.closeReason == .tooSlow(bufferedBytes: 1024))
        #expect(console.viewerCount == 1)
        let dropped = try await Client(slow)
        await slow.ended()
        try await Self.eventually("the other client got both chunks") { other.outputBytes == 2000 }
        #expect(other.bytes == [UInt8](repeating: 65, count: 1000) + [UInt8](repeating: 66, count: 1000))
        #expect(other.viewer.closeReason == nil)
        try await Self.eventually("the dropped client read its hello") { !dropped.messages.isEmpty }
        try await Task.sleep(for: .milliseconds(50))  // (anything written after the hello would be there by now)
        #expect(dropped.messages == [.control(.hello(mode: .read, history: 0))], "nothing more goes to a client that could not keep up")
    }

    @Test("a viewer whose client stops reading is dropped with a reason, and the others get every byte")
    func slowViewerDropped() async throws {
        let fixture = try Fixture()
        var limits = ConsoleMultiplexer.Limits.defaults
        limits.viewerBufferBytes = 64 * 1024
        let console = try fixture.multiplexer(limits)
        defer { console.end(.sessionClosed) }
        let stuck = try await Client(try #require(console.join(.read)), reads: false)
        let reading = try await Client(try #require(console.join(.read)))
        // Chunks of their own, as a chatty guest's are, until the kernel's buffers and then the daemon's are full
        // for the stuck client. Each waits for the reading client's socket to take the one before, so that the
        // reading client never falls behind by the bound on a loaded machine (that would be a second drop, right).
        let chunk = [UInt8](repeating: 120, count: 16 * 1024)
        var delivered = 0
        while stuck.viewer.closeReason == nil, delivered < 64 << 20 {
            console.deliver(chunk)
            delivered += chunk.count
            try await Self.eventually("the reading client's socket took the chunk") { reading.viewer.unsentBytes == 0 }
        }
        #expect(stuck.viewer.closeReason == .tooSlow(bufferedBytes: 64 * 1024))
        #expect(reading.viewer.closeReason == nil)
        try await Self.eventually("the reading client got every byte") { reading.outputBytes == delivered }
        #expect(reading.controls == [.hello(mode: .read, history: 0)])
        #expect(console.viewerCount == 1)
        await stuck.viewer.ended()
    }


    /// A stand-in for QEMU's console socket: accepts clients one after the other and keeps what they send.
    final class ConsoleSocket: Sendable {
        let received = Shared<[UInt8]>([])
        /// Clients that connected, and those of them that have gone.
        let connections = Shared<(opened: Int, closed: Int)>((0, 0))
        let channel: any Channel

        init(path: String) async throws {
            let received = received
            let connections = connections
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelInitializer { channel in
                    connections.withLock { $0.opened += 1 }
                    channel.closeFuture.whenComplete { _ in connections.withLock { $0.closed += 1 } }
                    return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Keeper(received: received)) }
                }
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        }

        var text: String { String(decoding: received.withLock { $0 }, as: UTF8.self) }

        func close() async throws { try await channel.close() }

        final class Keeper: ChannelInboundHandler, Sendable {
            typealias InboundIn = ByteBuffer
            let received: Shared<[UInt8]>
            init(received: Shared<[UInt8]>) { self.received = received }
            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                let buffer = unwrapInboundIn(data)
                received.withLock { $0 += buffer.readableBytesView }
            }
        }
    }

    @Test("writers' keystrokes reach the console socket in order; a read-only viewer cannot type; a flood is refused")
    func input() async throws {
        let fixture = try Fixture()
        var limits = ConsoleMultiplexer.Limits.defaults
        limits.inputBurst = 4096
        let console = try fixture.multiplexer(limits)
        let pump = Task { await console.pumpInput() }
        let qemu = try await ConsoleSocket(path: fixture.endpoints.socket)
        let writer = try await Client(try #require(console.join(.write)))
        let other = try await Client(try #require(console.join(.write)))
        let viewer = try await Client(try #require(console.join(.read)))
        try writer.viewer.type(Array("echo ".utf8))
        try other.viewer.type(Array("$((6*7))".utf8))
        try writer.viewer.type(Array("\r".utf8))
        try await Self.eventually("QEMU got the line") { qemu.text == "echo $((6*7))\r" }
        #expect {
            try viewer.viewer.type(Array("rm -rf /\r".utf8))
        } throws: { ($0 as? ConsoleCloseError)?.close == .readOnly }
        #expect {
            for _ in 0..<100 { try writer.viewer.type([UInt8](repeating: 65, count: 1024)) }
        } throws: { ($0 as? ConsoleCloseError)?.close == .typingTooFast(bytesPerSecond: limits.inputBytesPerSecond) }
        try await Task.sleep(for: .milliseconds(200))
        #expect(!qemu.text.contains("rm -rf"), "nothing of the read-only viewer's reached the guest")
        #expect(qemu.text.utf8.count <= "echo $((6*7))\r".utf8.count + 4096, "no more than the burst of the flood went through")
        console.end(.sessionClosed)
        await pump.value
        try await qemu.close()
    }

    @Test("typing while the VM has no process tells the writers; after a restart of the VM input flows again")
    func inputWithoutVM() async throws {
        let fixture = try Fixture()
        let console = try fixture.multiplexer()
        let pump = Task { await console.pumpInput() }
        let writer = try await Client(try #require(console.join(.write)))
        let viewer = try await Client(try #require(console.join(.read)))
        try writer.viewer.type(Array("ls\r".utf8))
        try await Self.eventually("the writer is told") { !writer.notices.isEmpty }
        #expect(writer.notices.first?.contains("not running") == true)
        #expect(viewer.notices.isEmpty, "read-only viewers typed nothing, so are told nothing")

        let qemu = try await ConsoleSocket(path: fixture.endpoints.socket)
        try writer.viewer.type(Array("uptime\r".utf8))
        try await Self.eventually("QEMU (back after a restore) gets the next keystrokes") { qemu.text == "uptime\r" }
        console.end(.sessionClosed)
        await pump.value
        try await qemu.close()
    }

    @Test("the connection to QEMU is up only while somebody types; a keystroke after it closed is sent on a new one")
    func inputConnectionIdles() async throws {
        let fixture = try Fixture()
        var limits = ConsoleMultiplexer.Limits.defaults
        limits.inputIdle = .milliseconds(300)
        let console = try fixture.multiplexer(limits)
        let pump = Task { await console.pumpInput() }
        let qemu = try await ConsoleSocket(path: fixture.endpoints.socket)
        let writer = try await Client(try #require(console.join(.write)))
        #expect(qemu.connections.withLock { $0.opened } == 0, "nobody typed: QEMU only writes its log")
        try writer.viewer.type(Array("a".utf8))
        try await Self.eventually("the first keystroke") { qemu.text == "a" }
        // (A stalled machine may close even the first connection before its write: the keystroke is then sent
        // again on a new one. So: until every connection opened so far is closed.)
        try await Self.eventually("closed when idle") { qemu.connections.withLock { $0.opened >= 1 && $0.closed == $0.opened } }
        let before = qemu.connections.withLock { $0.opened }
        try writer.viewer.type(Array("b".utf8))
        try await Self.eventually("the next keystroke, on a new connection") { qemu.text == "ab" }
        #expect(qemu.connections.withLock { $0.opened } == before + 1)
        #expect(writer.notices.isEmpty, "nothing was lost, so nothing is said")
        console.end(.sessionClosed)
        await pump.value
        try await qemu.close()
    }

    @Test("when the session's files are deleted (closed), every viewer is ended with the reason")
    func logRemovedEndsViewers() async throws {
        let fixture = try Fixture("x\n")
        let console = try fixture.multiplexer()
        let one = try await Client(try #require(console.join(.write)))
        let two = try await Client(try #require(console.join(.read)))
        try FileManager.default.removeItem(atPath: fixture.endpoints.log)
        try await Self.eventually("both ended") { one.viewer.closeReason != nil && two.viewer.closeReason != nil }
        #expect(one.viewer.closeReason == .sessionClosed && two.viewer.closeReason == .sessionClosed)
        await one.viewer.ended()
        await two.viewer.ended()
        #expect(console.hasEnded && console.join(.read) == nil, "an ended console takes nobody")
    }

    @Test("the hub shares one console per session, detaches when the last client leaves, and attaches again from the log")
    func hubSharesAndReattaches() async throws {
        let fixture = try Fixture("before\n")
        var limits = ConsoleMultiplexer.Limits.defaults
        limits.viewers = 2
        let hub = ConsoleHub(limits: limits, framing: .unframed, logger: Logger(label: "test"))
        let id = SessionID()
        let one = try await hub.join(id, endpoints: fixture.endpoints, mode: .write)
        let two = try await hub.join(id, endpoints: fixture.endpoints, mode: .read)
        #expect(one.console === two.console)
        await #expect(throws: VMSessionError.self, "a third client is past the limit") {
            _ = try await hub.join(id, endpoints: fixture.endpoints, mode: .read)
        }
        #expect(await hub.viewerCount(of: id) == 2)
        one.leave()
        two.leave()
        #expect(await hub.viewerCount(of: id) == 0)
        #expect(one.console.hasEnded, "nobody watches: the log is no longer followed")
        try fixture.guestPrints("while nobody watched\n")
        let three = try await hub.join(id, endpoints: fixture.endpoints, mode: .read)
        #expect(String(decoding: three.history, as: UTF8.self) == "before\nwhile nobody watched\n")
        three.leave()
    }

    @Test("attached viewers are written each chunk framed once for all of them, after what was queued before they attached")
    func attachedViewersShareOneFrame() async throws {
        let fixture = try Fixture()
        let framings = Shared(0)
        let framing = ConsoleMultiplexer.Framing(
            output: { bytes in
                framings.withLock { $0 += 1 }
                return ConsoleMultiplexer.Framing.tagged.output(bytes)
            },
            control: ConsoleMultiplexer.Framing.tagged.control)
        let console = try fixture.multiplexer(framing: framing)
        defer { console.end(.sessionClosed) }
        let viewers = try (0..<3).map { _ in try #require(console.join(.write)) }
        console.deliver(Array("queued".utf8))
        var clients: [Client] = []
        for viewer in viewers { clients.append(try await Client(viewer)) }
        #expect(framings.withLock { $0 } == 3, "what was queued is framed per viewer as it attaches")
        console.deliver(Array("live".utf8))
        console.notice("a notice")
        for client in clients {
            try await Self.eventually("each client got the hello, the queued chunk, the live one and the notice, in order") {
                client.messages == [.control(.hello(mode: .write, history: 0)), .printed("queued"), .printed("live"), .control(.notice("a notice"))]
            }
        }
        #expect(framings.withLock { $0 } == 4, "the live chunk is framed once for the three viewers")
        try await Self.eventually("the socket took every byte: nothing counts against the viewers' bound") {
            viewers.allSatisfy { $0.unsentBytes == 0 }
        }
    }
}

extension ConsoleMultiplexer.Framing {
    static let outputTag: UInt8 = 0x6F  // "o"
    static let controlTag: UInt8 = 0x63  // "c"

    /// The tests' framing: each message a tag (output or control), its length as 4 bytes, then its bytes (a
    /// control's are its JSON), so that a client can tell the output from the controls and see every frame.
    static let tagged = Self(
        output: { bytes in tag(outputTag, bytes) },
        control: { control in tag(controlTag, ByteBuffer(bytes: (try? JSONEncoder().encode(control)) ?? Data())) })

    private static func tag(_ tag: UInt8, _ payload: ByteBuffer) -> ByteBuffer {
        var frame = ByteBuffer()
        frame.reserveCapacity(5 + payload.readableBytes)
        frame.writeInteger(tag)
        frame.writeInteger(UInt32(payload.readableBytes))
        frame.writeImmutableBuffer(payload)
        return frame
    }
}
