import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The fan-out benchmark's client, compiled: `clients` SSE streams read by one poll loop, and a PUT of a property
/// (carrying its send time) every `gap` milliseconds after the previous answer, `events` times. Prints the latency
/// of each event in each stream (ms) and how many never came, as JSON.
///
/// Why it exists beside the Python client it replaced: with 1000 streams the Python loop spent about 10 ms
/// reading and parsing the streams of each event, so its p99 was mostly its own (the floor server, which does
/// nothing else, measured 51 to 65 ms under it). A frame is stamped when poll said its socket was readable, before
/// any parsing.
struct FanOutClient: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout-client", abstract: "Open N SSE streams, PUT a stamped property E times, time each event in each stream.")

    @Option(help: "The server's loopback port.") var port: Int
    @Option(help: "The event stream's path and query.") var streamPath: String
    @Option(help: "The PUT's path.") var putPath: String
    @Option(help: "The PUT's bearer token.") var token: String
    @Option(help: "How many streams.") var clients = 1000
    @Option(help: "How many events.") var events = 50
    @Option(help: "Milliseconds between an answer and the next PUT.") var gap = 20.0

    func run() throws {
        var streams: [Int32] = []
        for _ in 0..<clients {
            let fd = try Loopback.connect(port: port)
            Loopback.send(fd, "GET \(streamPath) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            Loopback.setNonBlocking(fd)
            streams.append(fd)
        }
        var pending = [[UInt8]](repeating: [], count: clients)
        var received = [Int](repeating: 0, count: clients)
        // Each event's latencies (ms) by its send time: the first stream to get it shows the server's own work before
        // the fan-out (the request, the store, the event), the spread to the last what the fan-out itself took.
        var byEvent: [Int64: [Double]] = [:]
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var watched = streams.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let retry = Array("retry: 2000".utf8)
        let frameEnd = Array("\n\n".utf8)
        let valueKey = Array("\"value\":\"".utf8)

        // Every stream open (its `retry:` line read) before the first event.
        var open = Set<Int>()
        let openDeadline = Loopback.now() + 60_000_000_000
        while open.count < clients, Loopback.now() < openDeadline {
            guard Glibc.poll(&watched, nfds_t(clients), 1000) > 0 else { continue }
            for index in watched.indices where watched[index].revents != 0 {
                let count = buffer.withUnsafeMutableBytes { read(streams[index], $0.baseAddress, $0.count) }
                if count > 0 { pending[index] += buffer[0..<count] }
                if pending[index].firstRange(of: retry) != nil {
                    open.insert(index)
                    pending[index] = []
                }
            }
        }
        guard open.count == clients else { throw ValidationError("only \(open.count) of \(clients) event streams opened") }
        usleep(500_000)

        let emitter = try Loopback.connect(port: port)
        var reply: [UInt8] = []
        var sent = 0
        var waiting = false
        var nextSend = Loopback.now()
        var drainUntil: Int64?
        watched.append(pollfd(fd: emitter, events: Int16(POLLIN), revents: 0))
        while true {
            if !waiting, sent < events, Loopback.now() >= nextSend {
                let body = "{\"value\":\"\(Loopback.now())\"}"
                Loopback.send(
                    emitter,
                    "PUT \(putPath) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\n"
                        + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)")
                sent += 1
                waiting = true
            }
            if sent == events, !waiting, drainUntil == nil { drainUntil = Loopback.now() + 30_000_000_000 }
            if let drainUntil, received.allSatisfy({ $0 >= events }) || Loopback.now() > drainUntil { break }
            let timeout = !waiting && sent < events ? max(0, Int32((nextSend - Loopback.now()) / 1_000_000)) : 100
            guard Glibc.poll(&watched, nfds_t(watched.count), timeout) > 0 else { continue }
            let stamp = Loopback.now()
            for index in watched.indices where watched[index].revents != 0 {
                let fd = watched[index].fd
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard count > 0 else {
                    if count == 0 { watched[index].fd = -1 }
                    continue
                }
                if index == clients {
                    // The PUT's answer: its head, then a body of Content-Length bytes.
                    reply += buffer[0..<count]
                    if let end = reply.firstRange(of: Array("\r\n\r\n".utf8)) {
                        let head = String(decoding: reply[..<end.lowerBound], as: UTF8.self).lowercased()
                        let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                            .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                        if reply.count >= end.upperBound + length {
                            reply.removeFirst(end.upperBound + length)
                            waiting = false
                            nextSend = Loopback.now() + Int64(gap * 1_000_000)
                        }
                    }
                    continue
                }
                pending[index].append(contentsOf: buffer[0..<count])
                // Complete frames only; a frame's "value":"<send time>" gives its latency. Scanned with memchr/memcmp over
                // the bytes (``find``): the generic slice searches this loop used cost the daemon's frames (a few hundred
                // bytes of JSON) twice the client's CPU of the floors' short ones, and one client thread is on every
                // stream's path.
                let consumed = pending[index].withUnsafeBufferPointer { bytes -> Int in
                    guard let end = Self.lastFrameEnd(in: bytes) else { return 0 }
                    var from = 0
                    while let key = Self.find(valueKey, in: bytes, from: from, to: end) {
                        var sentAt: Int64 = 0
                        var cursor = key + valueKey.count
                        while cursor < end, let digit = bytes[cursor].asciiDigit {
                            sentAt = sentAt * 10 + Int64(digit)
                            cursor += 1
                        }
                        byEvent[sentAt, default: []].append(Double(stamp - sentAt) / 1e6)
                        received[index] += 1
                        from = cursor
                    }
                    return end + frameEnd.count
                }
                pending[index].removeFirst(consumed)
            }
        }
        for fd in streams + [emitter] { close(fd) }
        let perEvent = byEvent.sorted { $0.key < $1.key }.compactMap { _, latencies -> [Double]? in
            let sorted = latencies.sorted()
            guard let first = sorted.first, let last = sorted.last else { return nil }
            return [first, sorted[sorted.count / 2], last]
        }
        let json = try JSONSerialization.data(
            withJSONObject: ["latenciesMs": byEvent.values.flatMap { $0 }, "lost": clients * events - received.reduce(0, +), "perEventMs": perEvent],
            options: [])
        FileHandle.standardOutput.write(json + Data("\n".utf8))
    }
}

extension FanOutClient {
    /// Where the last `\n\n` (an SSE frame's end) in `bytes` starts, if any.
    static func lastFrameEnd(in bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var index = bytes.count - 1
        while index > 0 {
            if bytes[index] == 0x0A, bytes[index - 1] == 0x0A { return index - 1 }
            index -= 1
        }
        return nil
    }

    /// Where `needle` first occurs in `bytes[from..<to]`: memchr(3) for its first byte, memcmp(3) for the rest (glibc's
    /// memmem is a GNU extension that Swift's Glibc module leaves out).
    static func find(_ needle: [UInt8], in bytes: UnsafeBufferPointer<UInt8>, from: Int, to: Int) -> Int? {
        guard let base = bytes.baseAddress, let first = needle.first else { return nil }
        return needle.withUnsafeBytes { pattern -> Int? in
            guard let pattern = pattern.baseAddress else { return nil }
            var start = from
            while to - start >= needle.count {
                guard let hit = memchr(base + start, Int32(first), to - start - needle.count + 1) else { return nil }
                let at = UnsafeRawPointer(hit) - UnsafeRawPointer(base)
                if memcmp(base + at, pattern, needle.count) == 0 { return at }
                start = at + 1
            }
            return nil
        }
    }
}
