import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOPosix
import Testing
import VMSessionCore
import VMSessionDaemon
import VMSessionStore

#if canImport(Glibc)
import Glibc
#endif

@testable import VMSessionAPI

/// Event streams on the event loops (``EventStreamFastPath``) are the router's streams: the same requests over real
/// sockets, to the same routers served twice (with the fast paths, and without), give the same bytes (head, replay,
/// live frames, the end) in every scenario below; and both remove a client that goes, end one that does not read
/// while the others keep receiving, and end every stream on a graceful shutdown.
@Suite("Event streams on the event loops")
struct EventStreamFastPathTests {
    @Test("only the two event stream paths, with a UUID-shaped session id and any query, are the fast path's")
    func routes() {
        let id = "0b5c4a8e-6f0e-4d2a-9d55-1f3c2b1a0e9f"
        #expect(EventStreamFastPath.route("/api/v1/events")?.route == .all)
        #expect(EventStreamFastPath.route("/api/v1/events?token=a&token=b")?.route == .all)
        #expect(EventStreamFastPath.route("/api/v1/sessions/\(id)/events")?.id == id)
        #expect(EventStreamFastPath.route("/api/v1/sessions/\(id)/events?since=3")?.route == .session)
        for other in [
            "/api/v1/events/", "/api/v1/sessions/\(id)", "/api/v1/sessions/abc/events", "/api/v1/sessions//events",
            "/api/v1/sessions/\(id)/events/", "/API/v1/events", "/api/v1/sessions/\(id)x/events",
        ] {
            #expect(EventStreamFastPath.route(other) == nil, "\(other)")
        }
    }

    /// Records `count` property changes of `session` through the hub, as the daemon does; returns the last id.
    @discardableResult
    static func record(_ count: Int, of session: String, in fixture: APIFixture, value: String = "v") throws -> Int64 {
        let id = try #require(SessionID(session))
        var last: Int64 = 0
        for index in 0..<count {
            let events = try fixture.events.record {
                [try fixture.store.append(.propertyChanged, payload: #"{"name":"p","value":"\#(value)\#(index)"}"#, for: id, at: Date())]
            }
            last = events.last?.id ?? last
        }
        return last
    }

    static func newest(_ session: String, in fixture: APIFixture) throws -> Int64 {
        let id = try #require(SessionID(session))
        return try #require(try fixture.store.events(for: id, after: 0).last?.id)
    }

    @Test("replay from since=0, then live events, then the token revoked: the same bytes from both, and the stream ends")
    func replayLiveRevoked() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            try Self.record(3, of: id, in: fixture)
            let replayed = try Self.newest(id, in: fixture)
            let request = RawStream.request("/api/v1/sessions/\(id)/events?since=0", ["Authorization: Bearer \(token)"])
            try await fixture.live.run { fast, slow in
                let taken = fixture.live.eventsFastPath.takenCount
                try await RawStream.open(port: fast, request) { fastStream in
                    try await RawStream.open(port: slow, request) { slowStream in
                        for stream in [fastStream, slowStream] { try await stream.read { $0.contains("id: \(replayed)\n") } }
                        #expect(fixture.live.eventsFastPath.takenCount == taken + 1)
                        let last = try Self.record(5, of: id, in: fixture)
                        for stream in [fastStream, slowStream] { try await stream.read { $0.contains("id: \(last)\n") } }
                        #expect(try await client.call(.delete, "/api/v1/sessions/\(id)/token", token: token).status == .noContent)
                        for stream in [fastStream, slowStream] { try await stream.read { $0.hasSuffix("\r\n0\r\n\r\n") } }
                        #expect(fastStream.text == slowStream.text)
                        #expect(fastStream.text.hasPrefix("HTTP/1.1 200 OK\r\n"))
                        // Every event once, in order: the replay, then live (and whatever the revocation itself sent).
                        let ids = fastStream.text.components(separatedBy: "id: ").dropFirst().map { $0.prefix { $0 != "\n" } }.compactMap { Int64($0) }
                        #expect(Array(ids.prefix { $0 <= last }) == Array(1...last))
                        #expect(ids == ids.sorted() && Set(ids).count == ids.count)
                    }
                }
            }
        }
    }

    @Test("Last-Event-ID resumes the stream of every session after that id; a graceful shutdown ends both streams alike")
    func resumeAndShutdown() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let (other, _) = try await client.newSession()
            try Self.record(2, of: id, in: fixture)
            let resumeAfter = try Self.newest(id, in: fixture)
            try Self.record(2, of: other, in: fixture)
            let replayed = try Self.record(2, of: id, in: fixture)
            // The admin token's stream of all sessions, and a session token's, resumed.
            let all = RawStream.request("/api/v1/events", ["Authorization: Bearer \(fixture.adminToken)", "Last-Event-ID: \(resumeAfter)"])
            let one = RawStream.request("/api/v1/sessions/\(id)/events", ["Last-Event-ID: \(resumeAfter)"], query: "token=\(token)")
            try await fixture.live.run { fast, slow, shutDown in
                let taken = fixture.live.eventsFastPath.takenCount
                try await RawStream.open(port: fast, all) { fastAll in
                    try await RawStream.open(port: slow, all) { slowAll in
                        try await RawStream.open(port: fast, one) { fastOne in
                            try await RawStream.open(port: slow, one) { slowOne in
                                let streams = [fastAll, slowAll, fastOne, slowOne]
                                for stream in streams { try await stream.read { $0.contains("id: \(replayed)\n") } }
                                #expect(fixture.live.eventsFastPath.takenCount == taken + 2)
                                try Self.record(1, of: other, in: fixture)
                                let last = try Self.record(1, of: id, in: fixture)
                                for stream in streams { try await stream.read { $0.contains("id: \(last)\n") } }
                                await shutDown()
                                for stream in streams { try await stream.read { $0.hasSuffix("\r\n0\r\n\r\n") } }
                                #expect(fastAll.text == slowAll.text)
                                #expect(fastOne.text == slowOne.text)
                                #expect(!fastAll.text.contains("id: \(resumeAfter)\n"))
                                #expect(fastAll.text.contains(#""sessionId":"\#(other)""#))
                                #expect(!fastOne.text.contains(#""sessionId":"\#(other)""#))
                            }
                        }
                    }
                }
            }
        }
    }

    @Test("a refused stream (no token, another session's token, a bad Last-Event-ID, another origin) is the router's answer")
    func refusalsPassedOn() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let (_, otherToken) = try await client.newSession()
            let path = "/api/v1/sessions/\(id)/events"
            let cases = [
                RawStream.request(path, []),
                RawStream.request(path, ["Authorization: Bearer \(otherToken)"]),
                RawStream.request(path, ["Authorization: Bearer \(token)", "Last-Event-ID: x"]),
                RawStream.request(path, ["Authorization: Bearer \(token)", "Origin: http://evil.example"]),
                RawStream.request("/api/v1/events", ["Authorization: Bearer not-a-token"]),
            ]
            try await fixture.live.run { fast, slow in
                let taken = fixture.live.eventsFastPath.takenCount
                for request in cases {
                    let mine = try await RawStream.open(port: fast, request) { stream in
                        try await stream.read { $0.contains("\r\n\r\n{") && $0.hasSuffix("}") }
                        return stream.text
                    }
                    let theirs = try await RawStream.open(port: slow, request) { stream in
                        try await stream.read { $0.contains("\r\n\r\n{") && $0.hasSuffix("}") }
                        return stream.text
                    }
                    #expect(mine == theirs, "\(request)")
                    #expect(!mine.hasPrefix("HTTP/1.1 200"), "\(request)")
                }
                #expect(fixture.live.eventsFastPath.takenCount == taken)
            }
        }
    }

    @Test("a client that closes its stream is removed: no subscriber left, and the clients gauge back where it was")
    func closedClientRemoved() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let request = RawStream.request("/api/v1/sessions/\(id)/events", ["Authorization: Bearer \(token)"])
            @Sendable func gauge() async throws -> Double {
                try await client.scrape(fixture.adminToken).value("vmsessiond_event_stream_clients", [:]) ?? 0
            }
            try await fixture.live.run { fast, slow in
                for port in [fast, slow] {
                    let subscribers = fixture.events.subscriberCount
                    let clients = try await gauge()
                    try await RawStream.open(port: port, request) { stream in
                        try await stream.read { $0.contains("retry: 2000\n\n") }
                        #expect(fixture.events.subscriberCount == subscribers + 1)
                        #expect(try await gauge() == clients + 1)
                    }
                    // The router's stream notices when a write fails; the fast path when the socket closes.
                    var removed = false
                    var seen: (Int, Double) = (0, 0)
                    for _ in 0..<200 {
                        seen = (fixture.events.subscriberCount, try await gauge())
                        if fixture.events.subscriberCount == subscribers, try await gauge() == clients {
                            removed = true
                            break
                        }
                        try Self.record(1, of: id, in: fixture)
                        try await Task.sleep(for: .milliseconds(25))
                    }
                    #expect(removed, "port \(port == fast ? "fast" : "slow"): \(seen) left of \(subscribers), \(clients)")
                }
            }
        }
    }

    @Test("a client that stops reading is ended, never waited for; the other client gets every event")
    func slowClientEnded() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let request = RawStream.request("/api/v1/sessions/\(id)/events", ["Authorization: Bearer \(token)"])
            // 8000 events of about 2 KiB, 20 at a time: more than the kernel's socket buffers (up to 4 MiB here) hold
            // plus the hub's 4096 queued events (the router's bound), or plus the fast path's bound in bytes.
            let value = String(repeating: "x", count: 2000)
            try await fixture.live.run { fast, slow in
                let before = fixture.events.subscriberCount
                for port in [fast, slow] {
                    // The previous round's streams are closed; their subscriptions go as their connections close,
                    // asynchronously: each round starts from none of them left (none leaked either).
                    for _ in 0..<500 where fixture.events.subscriberCount != before { try await Task.sleep(for: .milliseconds(10)) }
                    #expect(fixture.events.subscriberCount == before, "port \(port == fast ? "fast" : "slow"): a stream of the last round is left")
                    let subscribers = before
                    let dropped = try await client.scrape(fixture.adminToken).value("vmsessiond_event_subscribers_dropped_total", [:]) ?? 0
                    let stalled = try StalledClient(port: port, request: request)
                    defer { stalled.close() }
                    try await RawStream.open(port: port, request) { reader in
                        try await reader.read { $0.contains("retry: 2000\n\n") }
                        for _ in 0..<200 where fixture.events.subscriberCount < subscribers + 2 { try await Task.sleep(for: .milliseconds(10)) }
                        #expect(fixture.events.subscriberCount == subscribers + 2)
                        // The reader reads while the events are recorded; the stalled client reads nothing.
                        try await withThrowingTaskGroup { group in
                            group.addTask { try await reader.read(keep: false) { _ in reader.frames >= 8000 } }
                            for _ in 0..<400 {
                                try Self.record(20, of: id, in: fixture, value: value)
                                try await Task.sleep(for: .milliseconds(5))
                            }
                            try await group.waitForAll()
                        }
                        #expect(reader.frames == 8000, "port \(port == fast ? "fast" : "slow")")
                        // The stalled client's subscription was ended and counted; the reader's is the one left.
                        let now = try await client.scrape(fixture.adminToken).value("vmsessiond_event_subscribers_dropped_total", [:]) ?? 0
                        #expect(
                            now == dropped + 1 && fixture.events.subscriberCount == subscribers + 1,
                            "port \(port == fast ? "fast" : "slow"): dropped \(now) (was \(dropped)), subscribers \(fixture.events.subscriberCount) (was \(subscribers))")
                    }
                }
            }
        }
    }
}

/// An HTTP/1.1 event stream read raw off a loopback socket: every byte the server wrote, the `Date` value aside.
final class RawStream: @unchecked Sendable {
    private var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private var bytes: [UInt8] = []
    private var tail: [UInt8] = []
    /// How many frames with an id were read (counted as they come, for a reader that does not keep the bytes).
    private(set) var frames = 0
    private(set) var closed = false

    private init(inbound: NIOAsyncChannelInboundStream<ByteBuffer>) {
        self.inbound = inbound.makeAsyncIterator()
    }

    static func request(_ path: String, _ headers: [String], query: String? = nil) -> String {
        let target = query.map { path + (path.contains("?") ? "&" : "?") + $0 } ?? path
        return (["GET \(target) HTTP/1.1", "Host: localhost:7011"] + headers).joined(separator: "\r\n") + "\r\n\r\n"
    }

    static func open<Result: Sendable>(port: Int, _ request: String, _ body: (RawStream) async throws -> Result) async throws -> Result {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
        }
        // A server that never ends a stream fails the test instead of hanging it.
        let deadline = channel.channel.eventLoop.scheduleTask(in: .seconds(60)) { channel.channel.close(promise: nil) }
        defer { deadline.cancel() }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            return try await body(RawStream(inbound: inbound))
        }
    }

    /// Reads until `done` holds for the text so far (or for the last bytes, when `keep` is false), or the server closes.
    func read(keep: Bool = true, until done: (String) -> Bool) async throws {
        while !done(keep ? text : String(decoding: tail, as: UTF8.self)) {
            guard !closed, let chunk = try await inbound.next() else {
                closed = true
                Issue.record("the stream ended before it was expected to: \(text.suffix(200))")
                return
            }
            let new = Array(chunk.readableBytesView)
            frames += Self.count(Array("\nid: ".utf8), in: tail.suffix(4) + new)
            if keep { bytes += new }
            tail = Array((tail.suffix(4096) + new).suffix(4096))
        }
    }

    /// How often `pattern` occurs in `bytes` (bytes, not characters: `\r\n` is one character to Swift).
    static func count(_ pattern: [UInt8], in bytes: [UInt8]) -> Int {
        bytes.withUnsafeBufferPointer { haystack in
            guard haystack.count >= pattern.count else { return 0 }
            var found = 0
            for start in 0...(haystack.count - pattern.count) where haystack[start] == pattern[0] {
                var index = 1
                while index < pattern.count, haystack[start + index] == pattern[index] { index += 1 }
                if index == pattern.count { found += 1 }
            }
            return found
        }
    }

    /// What was read, with the `Date` header's value taken out.
    var text: String {
        String(decoding: bytes, as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false)
            .map { $0.lowercased().hasPrefix("date: ") ? "date: (now)" : String($0) }.joined(separator: "\r\n")
    }
}

/// A client that opens a stream with a small receive buffer and never reads it.
final class StalledClient: Sendable {
    let socket: Int32

    init(port: Int, request: String) throws {
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var size: Int32 = 4096
        setsockopt(socket, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(connected == 0)
        let bytes = Array(request.utf8)
        try #require(send(socket, bytes, bytes.count, 0) == bytes.count)
    }

    func close() { _ = Glibc.close(socket) }
}
