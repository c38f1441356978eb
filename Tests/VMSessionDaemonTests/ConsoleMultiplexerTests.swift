import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
import VMSessionCore
import VMSessionHypervisor
@testable import VMSessionDaemon

/// The console's multiplexer on real parts: a real log file appended to as QEMU appends to it, and a real
/// Unix socket served by the test where QEMU's console socket would be. (The real QEMU is in the browser
/// tests, Tests/Browser/test_console.py.)
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

        func multiplexer(_ limits: ConsoleMultiplexer.Limits = .defaults) throws -> ConsoleMultiplexer {
            try ConsoleMultiplexer(session: SessionID(), endpoints: endpoints, limits: limits, logger: Logger(label: "test"))
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

    /// Everything one viewer receives, gathered by a reader task of its own.
    final class Collector: Sendable {
        let viewer: ConsoleMultiplexer.Viewer
        private let received = Shared<(bytes: [UInt8], notices: [String], ended: Bool)>(([], [], false))
        private let reader: Task<Void, Never>

        init(_ viewer: ConsoleMultiplexer.Viewer, reads: Bool = true) {
            self.viewer = viewer
            let received = received
            reader = Task {
                guard reads else { return }
                for await batch in viewer.output {
                    for output in batch {
                        switch output {
                        case .bytes(let bytes):
                            received.withLock { $0.bytes += Array(bytes.readableBytesView) }
                            viewer.sent(bytes.readableBytes)
                        case .control(let control):
                            received.withLock { $0.notices.append(control.message ?? "") }
                        }
                    }
                }
                received.withLock { $0.ended = true }
            }
        }

        var text: String { String(decoding: viewer.history + received.withLock { $0.bytes }, as: UTF8.self) }
        var live: String { String(decoding: received.withLock { $0.bytes }, as: UTF8.self) }
        var notices: [String] { received.withLock { $0.notices } }
        var ended: Bool { received.withLock { $0.ended } }

        deinit { reader.cancel() }
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

    @Test("a viewer gets what the guest printed before it came, then live output, with no gap and no repeat")
    func historyThenLive() async throws {
        let fixture = try Fixture("booted\r\n")
        let console = try fixture.multiplexer()
        defer { console.end(.sessionClosed) }
        let first = Collector(try #require(console.join(.write)))
        #expect(String(decoding: first.viewer.history, as: UTF8.self) == "booted\r\n")
        try fixture.guestPrints("/ # echo $((6*7))\r\n42\r\n")
        try await Self.eventually("the first viewer sees the live line") { first.live.contains("42") }
        let second = Collector(try #require(console.join(.read)))
        #expect(String(decoding: second.viewer.history, as: UTF8.self) == "booted\r\n/ # echo $((6*7))\r\n42\r\n",
                "a viewer that came later sees the line printed before it connected")
        try fixture.guestPrints("/ # ")
        try await Self.eventually("both see the prompt") { first.text.hasSuffix("/ # ") && second.text.hasSuffix("/ # ") }
        #expect(first.text == "booted\r\n/ # echo $((6*7))\r\n42\r\n/ # ")
        #expect(second.text == first.text, "the same screen for both")
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
        let viewer = Collector(try #require(console.join(.read)))
        await writer.value
        try await Self.eventually("every line arrived") { viewer.text.hasSuffix("line 1999\n") }
        let lines = viewer.text.split(separator: "\n")
        #expect(lines == (0..<2000).map { "line \($0)" }[...].suffix(lines.count), "in order, none twice, none missing")
        #expect(lines.count == 2000)
    }

    @Test("what comes while a viewer's handler is busy reaches it as one batch: bytes merged in order, a notice in its place, nothing lost at the end")
    func busyViewerGetsOneBatch() async throws {
        let fixture = try Fixture()
        let console = try fixture.multiplexer()
        let viewer = try #require(console.join(.write))
        // A byte at a time, as QEMU writes its log, while nobody takes the viewer's output.
        let before = (0..<200).map { "\($0) " }.joined()
        for byte in before.utf8 { console.deliver([byte]) }
        console.notice("the VM is not running")
        console.deliver(Array("after".utf8))
        console.end(.sessionClosed)
        var batches: [[ConsoleMultiplexer.Output]] = []
        for await batch in viewer.output { batches.append(batch) }
        #expect(batches == [[.bytes(ByteBuffer(string: before)), .control(.notice("the VM is not running")), .bytes(ByteBuffer(string: "after"))]])
        #expect(viewer.closeReason == .sessionClosed)
    }

    @Test("viewers that keep up are handed the same bytes (one buffer per chunk); one behind gets its chunks merged")
    func chunkSharedByViewers() async throws {
        let fixture = try Fixture()
        let console = try fixture.multiplexer()
        defer { console.end(.sessionClosed) }
        let viewers = try (0..<50).map { _ in try #require(console.join(.read)) }
        let behind = try #require(console.join(.read))
        console.deliver(Array("one chunk".utf8))
        let storages = try viewers.map { viewer -> UnsafeRawPointer? in
            let batch = viewer.take()
            guard case .bytes(let bytes) = try #require(batch.first), batch.count == 1 else {
                Issue.record("expected one batch of bytes, got \(batch)")
                return nil
            }
            #expect(String(buffer: bytes) == "one chunk")
            return bytes.withUnsafeReadableBytes { UnsafeRawPointer($0.baseAddress) }
        }
        #expect(storages.first != nil && Set(storages).count == 1, "every viewer got the one buffer, not a copy")
        console.deliver(Array(" and another".utf8))
        #expect(behind.take() == [.bytes(ByteBuffer(string: "one chunk and another"))])
    }

    @Test("a viewer dropped for being slow is not sent what was queued for it")
    func slowViewerLosesItsQueue() async throws {
        let fixture = try Fixture()
        var limits = ConsoleMultiplexer.Limits.defaults
        limits.viewerBufferBytes = 1024
        let console = try fixture.multiplexer(limits)
        defer { console.end(.sessionClosed) }
        let slow = try #require(console.join(.read))
        let other = try #require(console.join(.read))
        console.deliver([UInt8](repeating: 65, count: 1000))
        #expect(other.take() == [.bytes(ByteBuffer(bytes: [UInt8](repeating: 65, count: 1000)))])
        other.sent(1000)  // the other viewer's handler wrote it
        console.deliver([UInt8](repeating: 66, count: 1000))
        #expect(slow.closeReason == .tooSlow(bufferedBytes: 1024))
        var batches: [[ConsoleMultiplexer.Output]] = []
        for await batch in slow.output { batches.append(batch) }
        #expect(batches.isEmpty, "nothing more goes to a client that could not keep up")
        #expect(other.closeReason == nil)
        #expect(other.take() == [.bytes(ByteBuffer(bytes: [UInt8](repeating: 66, count: 1000)))])
    }

    @Test("a viewer that stops reading is dropped with a reason, and the others get every byte")
    func slowViewerDropped() async throws {
        let fixture = try Fixture()
        var limits = ConsoleMultiplexer.Limits.defaults
        limits.viewerBufferBytes = 8 * 1024
        let console = try fixture.multiplexer(limits)
        defer { console.end(.sessionClosed) }
        let stuck = Collector(try #require(console.join(.read)), reads: false)
        let reading = Collector(try #require(console.join(.read)))
        let chunk = String(repeating: "x", count: 1023) + "\n"
        for _ in 0..<32 {
            try fixture.guestPrints(chunk)
            try await Task.sleep(for: .milliseconds(5))  // read as chunks of their own, as a chatty guest's are
        }
        try await Self.eventually("the reading viewer got all 32 KiB") { reading.live.utf8.count == 32 * 1024 }
        #expect(stuck.viewer.closeReason == .tooSlow(bufferedBytes: 8 * 1024))
        #expect(reading.viewer.closeReason == nil)
        #expect(console.viewerCount == 1)
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
        let writer = Collector(try #require(console.join(.write)))
        let other = Collector(try #require(console.join(.write)))
        let viewer = Collector(try #require(console.join(.read)))
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
        let writer = Collector(try #require(console.join(.write)))
        let viewer = Collector(try #require(console.join(.read)))
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
        let writer = Collector(try #require(console.join(.write)))
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
        let one = Collector(try #require(console.join(.write)))
        let two = Collector(try #require(console.join(.read)))
        try FileManager.default.removeItem(atPath: fixture.endpoints.log)
        try await Self.eventually("both ended") { one.ended && two.ended }
        #expect(one.viewer.closeReason == .sessionClosed && two.viewer.closeReason == .sessionClosed)
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

    // MARK: Attached viewers: the console writes into their connections itself

    /// Where a protocol's frame encoder sits in a client's pipeline; the console writes below it, so it never
    /// sees a write (one that reached it would fail the test).
    final class EncoderStandIn: ChannelOutboundHandler, Sendable {
        typealias OutboundIn = Never
    }

    /// A client's connection over a real Unix socket to a peer that reads (``ConsoleSocket``) or never reads.
    static func connect(to path: String) async throws -> any Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EncoderStandIn()) }
            }
            .connect(unixDomainSocketPath: path).get()
    }

    static func attach(_ viewer: ConsoleMultiplexer.Viewer, to connection: any Channel) async throws {
        try await connection.eventLoop.submit {
            let encoder = try connection.pipeline.syncOperations.context(handlerType: EncoderStandIn.self)
            viewer.attach(ConsoleChannel(writingBelow: encoder))
        }.get()
    }

    @Test("attached viewers are written each chunk framed once for all of them, after what was queued before they attached")
    func attachedViewersShareOneFrame() async throws {
        let fixture = try Fixture()
        let framings = Shared(0)
        let framing = ConsoleMultiplexer.Framing(
            output: { bytes in
                framings.withLock { $0 += 1 }
                return ByteBuffer(string: "<\(String(buffer: bytes))>")
            },
            control: { ByteBuffer(string: "{\($0.message ?? "")}") })
        let console = try ConsoleMultiplexer(session: SessionID(), endpoints: fixture.endpoints, limits: .defaults, framing: framing, logger: Logger(label: "test"))
        defer { console.end(.sessionClosed) }
        var peers: [ConsoleSocket] = []
        var viewers: [ConsoleMultiplexer.Viewer] = []
        var connections: [any Channel] = []
        for index in 0..<3 {
            let path = fixture.directory + "/client\(index).sock"
            peers.append(try await ConsoleSocket(path: path))
            connections.append(try await Self.connect(to: path))
            viewers.append(try #require(console.join(.write)))
        }
        console.deliver(Array("queued".utf8))
        for (viewer, connection) in zip(viewers, connections) { try await Self.attach(viewer, to: connection) }
        #expect(framings.withLock { $0 } == 3, "what was queued is framed per viewer as it attaches")
        console.deliver(Array("live".utf8))
        console.notice("a notice")
        for peer in peers {
            try await Self.eventually("each client got the hello, the queued chunk, the live one and the notice, in order") {
                peer.text == "{}<queued><live>{a notice}"
            }
        }
        #expect(framings.withLock { $0 } == 4, "the live chunk is framed once for the three viewers")
        try await Self.eventually("the socket took every byte: nothing counts against the viewers' bound") {
            viewers.allSatisfy { $0.unsentBytes == 0 }
        }
        for connection in connections { try await connection.close() }
        for peer in peers { try await peer.close() }
    }

    @Test("an attached viewer whose client stops reading is dropped with a reason; the others get every byte")
    func attachedSlowViewerDropped() async throws {
        let fixture = try Fixture()
        var limits = ConsoleMultiplexer.Limits.defaults
        limits.viewerBufferBytes = 64 * 1024
        let console = try fixture.multiplexer(limits)
        defer { console.end(.sessionClosed) }
        // A peer that accepts and never reads: the kernel's buffers fill, then the daemon's.
        let stuckPath = fixture.directory + "/stuck.sock"
        let stuckPeer = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.autoRead, value: false)
            .bind(unixDomainSocketPath: stuckPath, cleanupExistingSocketFile: true).get()
        let readingPath = fixture.directory + "/reading.sock"
        let readingPeer = try await ConsoleSocket(path: readingPath)
        let stuck = try #require(console.join(.read))
        let reading = try #require(console.join(.read))
        let stuckConnection = try await Self.connect(to: stuckPath)
        let readingConnection = try await Self.connect(to: readingPath)
        try await Self.attach(stuck, to: stuckConnection)
        try await Self.attach(reading, to: readingConnection)
        let chunk = [UInt8](repeating: 120, count: 16 * 1024)
        var delivered = 0
        while stuck.closeReason == nil, delivered < 64 << 20 {
            console.deliver(chunk)
            delivered += chunk.count
            try await Task.sleep(for: .milliseconds(1))
        }
        #expect(stuck.closeReason == .tooSlow(bufferedBytes: 64 * 1024))
        #expect(reading.closeReason == nil)
        let hello = ConsoleMultiplexer.Framing.unframed.control(.hello(mode: .read, history: 0)).readableBytes
        try await Self.eventually("the reading client got the hello and every byte") {
            readingPeer.received.withLock { $0.count } == hello + delivered
        }
        #expect(console.viewerCount == 1)
        await stuck.ended()
        try await stuckConnection.close()
        try await readingConnection.close()
        try await stuckPeer.close()
        try await readingPeer.close()
    }
}
