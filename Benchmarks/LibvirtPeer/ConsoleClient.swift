import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The console benchmark's client, compiled: `clients` read-only console WebSockets read by one poll loop, and QEMU's
/// console log polled every 0.5 ms by a second thread, both stamping on CLOCK_MONOTONIC. It prints `window-start`
/// and `window-end` on stdout as the measured window opens and closes (so that `Benchmarks/console_bench.py` reads
/// the daemon's and QEMU's CPU around it), then one JSON object with what it saw: when each `tick N` line first
/// appeared in the log and at each viewer, the log's bytes in the window and each viewer's byte count at the
/// window's ends. The arithmetic (window lines, latencies, lost lines) is `console_bench.py`'s, for both clients.
///
/// Why it exists beside the Python client: that one reads each viewer in a thread of its own, and its log peer is
/// another, all under one interpreter lock, so at 50 viewers its p99 was the lock's as much as the daemon's (p99
/// ratios 1.21 and 1.51 at the same daemon). Here a chunk is stamped when poll said its socket was readable, before
/// any parsing, as `fanout-client` does for the SSE streams.
///
/// It speaks only what the benchmark needs of RFC 6455: the HTTP/1.1 upgrade, unmasked server frames (text,
/// binary, continuation, close, ping answered with a pong), a masked close frame at the end. The first text
/// frame is the console's hello; the binary bytes it announces as history are skipped, not counted.
struct ConsoleClient: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console-client",
        abstract: "Read N console WebSockets in one poll loop beside QEMU's console log; print when each tick line arrived.")

    @Option(help: "The console's URL: ws://127.0.0.1:PORT/api/v1/sessions/ID/console?token=…&mode=read") var url: String
    @Option(help: "How many viewers.") var clients = 1
    @Option(help: "QEMU's console log (the peer: read directly, polled every 0.5 ms).") var log: String
    @Option(help: "The measured window, in seconds.") var window = 20.0
    @Option(help: "Seconds between the viewers' connecting and the window (past the history).") var settle = 1.0
    @Option(help: "Seconds to wait after the window for the last line the log showed to reach every viewer.") var drain = 15.0

    func run() throws {
        guard let components = URLComponents(string: url), components.scheme == "ws",
            components.host == "127.0.0.1" || components.host == "localhost", let port = components.port
        else { throw ValidationError("--url must be ws://127.0.0.1:PORT/…; got \(url)") }
        let target = components.percentEncodedPath + (components.percentEncodedQuery.map { "?" + $0 } ?? "")
        let viewers = try (0..<clients).map { _ in try ConsoleViewer(port: port, target: target) }
        var watched = viewers.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        var buffer = [UInt8](repeating: 0, count: 1 << 18)

        let windowStart = Loopback.now() + Int64(settle * 1e9)
        let windowEnd = windowStart + Int64(window * 1e9)
        var bytesAtStart: [Int]?
        var bytesAtEnd: [Int]?
        let poller = LogPoller(path: log, until: windowEnd)
        var logged: LogPoller.Seen?
        var drainDeadline = Int64.max
        while true {
            let now = Loopback.now()
            if bytesAtStart == nil, now >= windowStart {
                bytesAtStart = viewers.map(\.bytes)
                try poller.start()
                FileHandle.standardOutput.write(Data("window-start\n".utf8))
            }
            if bytesAtStart != nil, bytesAtEnd == nil, now >= windowEnd {
                bytesAtEnd = viewers.map(\.bytes)
                FileHandle.standardOutput.write(Data("window-end\n".utf8))
            }
            if bytesAtEnd != nil, logged == nil, let seen = poller.seen {
                logged = seen
                drainDeadline = now + Int64(drain * 1e9)
            }
            if let logged {
                // What was in the log when the window closed has reached every viewer (or never will).
                guard let last = logged.lines.keys.max(), viewers.contains(where: { $0.arrived[last] == nil }), now < drainDeadline
                else { break }
            }
            let timeout: Int64 =
                bytesAtStart == nil ? windowStart - now : bytesAtEnd == nil ? windowEnd - now : logged == nil ? 1_000_000 : 100_000_000
            let ready = Glibc.poll(&watched, nfds_t(watched.count), Int32(max(0, (timeout + 999_999) / 1_000_000)))
            guard ready > 0 else { continue }
            let stamp = Loopback.now()
            for index in watched.indices where watched[index].revents != 0 {
                let count = buffer.withUnsafeMutableBytes { read(watched[index].fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    viewers[index].consume(buffer[0..<count], at: stamp)
                } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                    viewers[index].closed = true
                }
                if viewers[index].closed { watched[index].fd = -1 }
            }
        }
        for viewer in viewers { viewer.close() }

        guard let logged, let bytesAtStart, let bytesAtEnd else { throw ValidationError("the window never closed") }
        func pairs(_ stamps: [Int: Int64]) -> [[Int64]] { stamps.sorted { $0.key < $1.key }.map { [Int64($0.key), $0.value] } }
        let report: [String: Any] = [
            "windowStartNs": windowStart, "windowEndNs": windowEnd,
            "log": ["bytes": logged.bytes, "seen": pairs(logged.lines)],
            "viewers": viewers.indices.map { index -> [String: Any] in
                [
                    "bytesAtStart": bytesAtStart[index], "bytesAtEnd": bytesAtEnd[index],
                    "arrived": pairs(viewers[index].arrived), "closedByServer": viewers[index].closed,
                ]
            },
        ]
        FileHandle.standardOutput.write(try JSONSerialization.data(withJSONObject: report) + Data("\n".utf8))
    }
}

/// The console's `tick N …` lines (`tick (\d+) [0-9a-z]+\r?\n`, as `console_bench.py` matches them) in a byte stream
/// that arrives in pieces: only complete lines are matched, the rest waits for the next piece.
struct TickLines {
    private var pending: [UInt8] = []

    /// Appends `bytes` and calls `found` with the number of each complete tick line, in order.
    mutating func feed(_ bytes: some Collection<UInt8>, _ found: (Int) -> Void) {
        pending.append(contentsOf: bytes)
        guard let lastNewline = pending.lastIndex(of: 0x0A) else { return }
        var lineStart = 0
        while lineStart <= lastNewline, let newline = pending[lineStart...lastNewline].firstIndex(of: 0x0A) {
            var lineEnd = newline
            if lineEnd > lineStart, pending[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            if let number = Self.tick(in: pending[lineStart..<lineEnd]) { found(number) }
            lineStart = newline + 1
        }
        pending.removeFirst(lastNewline + 1)
    }

    private static let marker = Array("tick ".utf8)

    /// The number of the leftmost `tick N word` that runs to the line's end, where `word` is [0-9a-z]+.
    static func tick(in line: ArraySlice<UInt8>) -> Int? {
        var start = line.startIndex
        while start + marker.count <= line.endIndex {
            defer { start += 1 }
            guard line[start..<(start + marker.count)].elementsEqual(marker) else { continue }
            var cursor = start + marker.count
            var number = 0
            var digits = 0
            while cursor < line.endIndex, digits < 18, let digit = line[cursor].asciiDigit {
                number = number * 10 + digit
                digits += 1
                cursor += 1
            }
            guard digits > 0, cursor < line.endIndex, line[cursor] == 0x20 else { continue }
            let word = line[(cursor + 1)...]
            guard !word.isEmpty, word.allSatisfy({ $0.asciiDigit != nil || (0x61...0x7A).contains($0) }) else { continue }
            return number
        }
        return nil
    }
}

/// One read-only console client on a non-blocking socket: the upgrade is done blocking in `init`, the frames are
/// parsed as the poll loop hands it what it read.
final class ConsoleViewer {
    let fd: Int32
    /// Live output bytes received (binary payload after the history).
    private(set) var bytes = 0
    /// When each tick line first arrived (the stamp of the read that completed it).
    private(set) var arrived: [Int: Int64] = [:]
    var closed = false

    private var input: [UInt8] = []
    private var lines = TickLines()
    /// The history the hello announced that is still to be skipped; nil until the hello came.
    private var historyLeft: Int?
    /// The opcode of the message a continuation frame continues, and a text message's bytes so far.
    private var messageOpcode: UInt8 = 0
    private var text: [UInt8] = []

    init(port: Int, target: String) throws {
        fd = try Loopback.connect(port: port)
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        Loopback.send(
            fd,
            "GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n")
        var head: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        let end = Array("\r\n\r\n".utf8)
        let range: Range<Int>
        while true {
            if let found = head.firstRange(of: end) {
                range = found
                break
            }
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count > 0 else {
                Glibc.close(fd)
                throw ValidationError("the console's upgrade got no answer (errno \(errno))")
            }
            head += chunk[0..<count]
        }
        let status = String(decoding: head[..<range.lowerBound], as: UTF8.self)
        guard status.hasPrefix("HTTP/1.1 101") else {
            Glibc.close(fd)
            throw ValidationError("the console refused the upgrade: \(status.prefix(200))")
        }
        input = Array(head[range.upperBound...])
        Loopback.setNonBlocking(fd)
    }

    /// Parses what was read (with what was left of the last read) into frames; `stamp` is when poll said it was there.
    func consume(_ chunk: ArraySlice<UInt8>, at stamp: Int64) {
        input += chunk
        var at = 0
        while input.count - at >= 2 {
            let first = input[at]
            let second = input[at + 1]
            var length = Int(second & 0x7F)
            var header = 2
            if length == 126 {
                guard input.count - at >= 4 else { break }
                length = Int(input[at + 2]) << 8 | Int(input[at + 3])
                header = 4
            } else if length == 127 {
                guard input.count - at >= 10 else { break }
                length = input[(at + 2)..<(at + 10)].reduce(0) { $0 << 8 | Int($1) }
                header = 10
            }
            let masked = second & 0x80 != 0
            if masked { header += 4 }
            guard input.count - at >= header + length else { break }
            var payload = input[(at + header)..<(at + header + length)]
            if masked {
                let mask = input[(at + header - 4)..<(at + header)].map { $0 }
                payload = ArraySlice(payload.enumerated().map { $0.element ^ mask[$0.offset % 4] })
            }
            frame(opcode: first & 0x0F, final: first & 0x80 != 0, payload: payload, at: stamp)
            at += header + length
        }
        input.removeFirst(at)
    }

    private func frame(opcode: UInt8, final: Bool, payload: ArraySlice<UInt8>, at stamp: Int64) {
        switch opcode {
        case 0x0, 0x1, 0x2:
            if opcode != 0 { messageOpcode = opcode }
            if messageOpcode == 0x1 {
                text += payload
                if final { hello() }
            } else if messageOpcode == 0x2 {
                output(payload, at: stamp)
            }
        case 0x8:
            closed = true
        case 0x9:
            send(opcode: 0xA, payload: Array(payload))
        default:
            break
        }
    }

    /// The hello (the first text message) announces how many bytes of history follow; later text messages are
    /// notices, not output.
    private func hello() {
        defer { text = [] }
        guard historyLeft == nil,
            let object = try? JSONSerialization.jsonObject(with: Data(text)) as? [String: Any], object["type"] as? String == "hello"
        else { return }
        historyLeft = object["history"] as? Int ?? 0
    }

    private func output(_ payload: ArraySlice<UInt8>, at stamp: Int64) {
        var live = payload
        if let left = historyLeft, left > 0 {
            let taken = min(left, live.count)
            historyLeft = left - taken
            live = live.dropFirst(taken)
        }
        bytes += live.count
        lines.feed(live) { number in
            if arrived[number] == nil { arrived[number] = stamp }
        }
    }

    /// A client frame (masked, as RFC 6455 requires of clients) of at most 125 bytes.
    private func send(opcode: UInt8, payload: [UInt8]) {
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        let body = payload.prefix(125)
        Loopback.send(fd, [0x80 | opcode, 0x80 | UInt8(body.count)] + mask + body.enumerated().map { $0.element ^ mask[$0.offset % 4] })
    }

    /// A normal closure (1000), then the socket closed.
    func close() {
        if !closed { send(opcode: 0x8, payload: [0x03, 0xE8]) }
        Glibc.close(fd)
    }
}

/// The benchmark's peer: QEMU's console log read directly on a thread of its own, as fast as it polls (every
/// 0.5 ms), from its end at `start()` until `until`: when each tick line first appeared, and how many bytes came.
final class LogPoller: @unchecked Sendable {
    struct Seen: Sendable {
        var bytes = 0
        var lines: [Int: Int64] = [:]
    }

    private let path: String
    private let until: Int64
    private let lock = NSLock()
    /// Set once, by the polling thread as it ends; read by the client's loop (guarded by `lock`).
    private var finished: Seen?

    init(path: String, until: Int64) {
        self.path = path
        self.until = until
    }

    /// Opens the log at its end now (the window's start) and polls it on a new thread.
    func start() throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw ValidationError("open \(path): errno \(errno)") }
        lseek(fd, 0, SEEK_END)
        Thread { self.poll(fd) }.start()
    }

    /// What the log showed in the window; nil until the polling thread has ended.
    var seen: Seen? { lock.withLock { finished } }

    private func poll(_ fd: Int32) {
        var seen = Seen()
        var lines = TickLines()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while Loopback.now() < until {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count > 0 else {
                usleep(500)
                continue
            }
            let stamp = Loopback.now()
            seen.bytes += count
            lines.feed(buffer[0..<count]) { number in
                if seen.lines[number] == nil { seen.lines[number] = stamp }
            }
        }
        close(fd)
        lock.withLock { finished = seen }
    }
}
