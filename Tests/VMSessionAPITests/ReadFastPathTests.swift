import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Metrics
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import Testing
import VMSessionCore
import VMSessionDaemon
import VMSessionMetrics

@testable import VMSessionAPI

/// The read fast path (``ReadFastPath``) answers exactly what the router answers: the same requests, raw bytes
/// over real sockets, to the same routers served twice (with the fast path, and without it), give the same
/// status, headers and body; the fast path answered the ones it should, passed the others on, kept pipelined
/// answers in order, counted what the router counts, and never shows a stale view.
@Suite("Read fast path")
struct ReadFastPathTests {
    @Test("only the four read paths, with a UUID-shaped id and any query, are the fast path's")
    func routes() {
        let id = "0b5c4a8e-6f0e-4d2a-9d55-1f3c2b1a0e9f"
        #expect(ReadFastPath.route("/api/v1")?.0 == .daemonInfo)
        #expect(ReadFastPath.route("/api/v1?x=1")?.0 == .daemonInfo)
        #expect(ReadFastPath.route("/api/v1/sessions")?.0 == .sessionList)
        #expect(ReadFastPath.route("/api/v1/sessions/\(id)")?.1 == id)
        #expect(ReadFastPath.route("/api/v1/sessions/\(id)?token=abc")?.0 == .session)
        #expect(ReadFastPath.route("/api/v1/operations/\(id.uppercased())")?.0 == .operation)
        for other in [
            "/api/v1/", "/api/v1/sessions/", "/api/v1/sessions/\(id)/", "/api/v1/sessions/\(id)/events", "/api/v1/sessions/abc",
            "/api/v1/sessions/\(id.dropLast())%66", "/API/v1", "//api/v1", "/api/v1/daemon", "/metrics", "/api/v1/sessions/\(id)x",
        ] {
            #expect(ReadFastPath.route(other) == nil, "\(other)")
        }
    }

    @Test("the Date header is RFC 9110's IMF-fixdate, as Hummingbird writes it")
    func dateFormat() {
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.format(1_796_489_276) == "Sat, 05 Dec 2026 16:47:56 GMT")
    }

    @Test("every request gets the router's answer byte for byte; the valid reads were the fast path's, the rest passed on")
    func sameAnswersAsTheRouter() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let (otherID, otherToken) = try await client.newSession()
            let admin = fixture.adminToken
            let open = try await client.call(.post, "/api/v1/sessions/\(otherID)/open", token: otherToken, body: #"{"cpus":1,"memory":128,"disk":16}"#)
            let operation = try #require((open["operation"] as? [String: Any])?["id"] as? String)
            _ = try await client.settled(otherID, token: otherToken)
            let page = "http://app.example:8080"
            #expect(try await client.call(.post, "/api/v1/origins/approve", token: admin, body: #"{"origin":"\#(page)"}"#).status == .ok)
            // The image store reads its versions once; from then on `/api/v1` needs no await.
            #expect(try await client.call(.get, "/api/v1").status == .ok)
            let unknown = UUID().uuidString.lowercased()
            let host = "127.0.0.1:7011"
            @Sendable func get(_ target: String, _ headers: [String] = [], method: String = "GET", version: String = "HTTP/1.1", body: String = "") -> String {
                ([("\(method) \(target) \(version)"), "Host: \(host)"] + headers).joined(separator: "\r\n") + "\r\n\r\n" + body
            }
            let bearer = "Authorization: Bearer \(token)"
            // (request, answered by the fast path)
            let cases: [(String, Bool)] = [
                (get("/api/v1/sessions/\(id)", [bearer]), true),
                (get("/api/v1/sessions/\(id)?token=\(token)"), true),
                (get("/api/v1/sessions/\(id)?view=1&token=\(token)"), true),
                (get("/api/v1/sessions/\(id)", ["authorization: bEaReR  \(token) "]), true),
                (get("/api/v1/sessions/\(id)", ["Authorization: Bearer \(admin)"]), true),
                (get("/api/v1/sessions", ["Authorization: Bearer \(admin)"]), true),
                (get("/api/v1"), true),
                (get("/api/v1?x=%20y"), true),
                (get("/api/v1/operations/\(operation)", ["Authorization: Bearer \(otherToken)"]), true),
                (get("/api/v1/operations/\(operation)", ["Authorization: Bearer \(admin)"]), true),
                (get("/api/v1/sessions/\(id)", [bearer, "Origin: \(page)"]), true),
                (get("/api/v1/sessions/\(id)", [bearer, "Origin: http://\(host)"]), true),
                (get("/api/v1/sessions/\(id)", [bearer, "Connection: keep-alive"]), true),
                (get("/api/v1/sessions/\(id)", [bearer], version: "HTTP/1.0"), true),
                (get("/api/v1/sessions/\(id)", ["Authorization: Bearer \(otherToken)"]), false),
                (get("/api/v1/sessions/\(id)", ["Authorization: Bearer not-a-token"]), false),
                (get("/api/v1/sessions/\(id)", ["Authorization: Basic \(token)"]), false),
                (get("/api/v1/sessions/\(id)"), false),
                (get("/api/v1/sessions/\(unknown)", [bearer]), false),
                (get("/api/v1/sessions/\(unknown)", ["Authorization: Bearer \(admin)"]), false),
                (get("/api/v1/sessions/not-a-session", [bearer]), false),
                (get("/api/v1/sessions/\(id)/", [bearer]), false),
                (get("/api/v1/sessions", [bearer]), false),
                (get("/api/v1/sessions"), false),
                (get("/api/v1/operations/\(operation)", [bearer]), false),
                (get("/api/v1/operations/\(unknown)", [bearer]), false),
                (get("/api/v1/sessions/\(id)", [bearer, "Origin: http://evil.example"]), false),
                (get("/api/v1/sessions/\(id)", [bearer, "Origin: null"]), false),
                (get("/api/v1", ["Origin: http://evil.example"]), false),
                (get("/api/v1/sessions/\(id)", [bearer]).replacingOccurrences(of: "Host: \(host)", with: "Host: evil.example:7011"), false),
                (get("/api/v1/sessions/\(id)", [bearer, "Origin: \(page)", "Access-Control-Request-Method: GET"], method: "OPTIONS"), false),
                (get("/api/v1/sessions/\(id)", [bearer], method: "HEAD"), false),
                (get("/api/v1/sessions/\(id)", [bearer], method: "TRACE"), false),
                (get("/api/v1/sessions/\(id)", [bearer, "Content-Length: 2"], body: "{}"), false),
                (get("/api/v1/sessions/\(id)", [bearer, "Expect: 100-continue"]), false),
            ]
            try await fixture.live.run { fast, slow in
                for (request, answered) in cases {
                    let before = fixture.live.readFastPath.answeredCount
                    let mine = try await RawConnection.exchange(port: fast, request, heads: request.hasPrefix("HEAD") ? [0] : [])
                    let fastAnswered = fixture.live.readFastPath.answeredCount - before
                    let theirs = try await RawConnection.exchange(port: slow, request, heads: request.hasPrefix("HEAD") ? [0] : [])
                    #expect(fixture.live.readFastPath.answeredCount - before == fastAnswered, "the server without it used it")
                    #expect(mine == theirs, "\(request)")
                    #expect(mine.count == 1, "\(request)")
                    #expect(fastAnswered == (answered ? 1 : 0), "\(request)")
                    if answered { #expect(mine.first?.status == "HTTP/1.1 200 OK", "\(request)") }
                }
                // Connection: close: the router answers, and the connection ends after it (a request after it gets nothing).
                let closing = get("/api/v1/sessions/\(id)", [bearer, "Connection: close"]) + get("/api/v1/sessions/\(id)", [bearer])
                let before = fixture.live.readFastPath.answeredCount
                let closed = try await RawConnection.exchange(port: fast, closing, answers: 2)
                #expect(closed == (try await RawConnection.exchange(port: slow, closing, answers: 2)))
                #expect(closed.count == 1)
                #expect(fixture.live.readFastPath.answeredCount == before)

                // Pipelined: every answer in order, the same as the router's; all valid, all the fast path's.
                let valid = cases.filter(\.1).map(\.0).filter { !$0.contains("HTTP/1.0") }
                let batch = valid.joined()
                let start = fixture.live.readFastPath.answeredCount
                let pipelined = try await RawConnection.exchange(port: fast, batch, answers: valid.count)
                #expect(fixture.live.readFastPath.answeredCount - start == valid.count)
                #expect(pipelined == (try await RawConnection.exchange(port: slow, batch, answers: valid.count)))
                #expect(pipelined.count == valid.count)
                // Mixed: the router's answers and the fast path's interleave in the order asked.
                let mixed = cases.map(\.0).filter { !$0.contains("HTTP/1.0") }
                let heads = Set(mixed.indices.filter { mixed[$0].hasPrefix("HEAD") })
                let interleaved = try await RawConnection.exchange(port: fast, mixed.joined(), answers: mixed.count, heads: heads)
                #expect(interleaved.count == mixed.count)
                #expect(interleaved == (try await RawConnection.exchange(port: slow, mixed.joined(), answers: mixed.count, heads: heads)))
            }
        }
    }

    @Test("a token revoked while a connection is open is refused on that connection's next request, by both paths alike")
    func revokedMidStream() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let request = "GET /api/v1/sessions/\(id) HTTP/1.1\r\nHost: localhost:7011\r\nAuthorization: Bearer \(token)\r\n\r\n"
            try await fixture.live.run { fastPort, slowPort in
                try await RawConnection.open(port: fastPort) { fast in
                    try await RawConnection.open(port: slowPort) { slow in
                        let first = try await fast.exchange(request)
                        #expect(first == (try await slow.exchange(request)))
                        #expect(first.first?.status == "HTTP/1.1 200 OK")
                        #expect(try await client.call(.delete, "/api/v1/sessions/\(id)/token", token: token).status == .noContent)
                        let before = fixture.live.readFastPath.answeredCount
                        let refused = try await fast.exchange(request)
                        #expect(refused == (try await slow.exchange(request)))
                        #expect(refused.first?.status == "HTTP/1.1 401 Unauthorized")
                        #expect(fixture.live.readFastPath.answeredCount == before)
                    }
                }
            }
        }
    }

    @Test("a change to a session (open, its settings, pause, close) is in the very next GET the fast path answers")
    func changesSeenAtOnce() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let base = "/api/v1/sessions/\(id)"
            let read = "GET \(base) HTTP/1.1\r\nHost: localhost:7011\r\nAuthorization: Bearer \(token)\r\n\r\n"
            let list = "GET /api/v1/sessions HTTP/1.1\r\nHost: localhost:7011\r\nAuthorization: Bearer \(fixture.adminToken)\r\n\r\n"
            try await fixture.live.run { fastPort, _ in
                try await RawConnection.open(port: fastPort) { fast in
                    let count = { fixture.live.readFastPath.answeredCount }
                    func state(_ asked: String? = nil, fastPath: Bool = true) async throws -> [String: Any] {
                        let request = asked ?? read
                        let before = count()
                        let answer = try #require(try await fast.exchange(request).first)
                        #expect(count() - before == (fastPath ? 1 : 0))
                        let json = try #require(try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any])
                        guard request == list else { return json }
                        return try #require((json["sessions"] as? [[String: Any]])?.first { $0["id"] as? String == id })
                    }
                    #expect(try await state()["state"] as? String == "closed")
                    let open = try await client.call(.post, base + "/open", token: token, body: #"{"cpus":1,"memory":128,"disk":16}"#)
                    let operation = try #require((open["operation"] as? [String: Any])?["id"] as? String)
                    _ = try await client.call(.get, "/api/v1/operations/\(operation)/wait?timeout=30", token: token)
                    #expect(try await state()["state"] as? String == "open")
                    let ended = "GET /api/v1/operations/\(operation) HTTP/1.1\r\nHost: localhost:7011\r\nAuthorization: Bearer \(token)\r\n\r\n"
                    #expect(try await state(ended)["status"] as? String == "succeeded")
                    #expect(try await client.call(.patch, base + "/daemon", token: token, body: #"{"controlled":true,"minCap":20}"#).status == .ok)
                    let patched = try await state()
                    #expect(patched["daemonControlled"] as? Bool == true && patched["daemonMinCap"] as? Int == 20)
                    #expect(try await state(list)["daemonMinCap"] as? Int == 20)
                    #expect(try await client.call(.post, base + "/start", token: token).status == .accepted)
                    _ = try await client.settled(id, token: token)
                    #expect(try await client.call(.post, base + "/pause", token: token).status == .ok)
                    // A VM with a process: the session's own view has live figures (the router's), the list does not.
                    #expect(try await state(fastPath: false)["state"] as? String == "paused")
                    #expect(try await state(list)["state"] as? String == "paused")
                    #expect(try await client.call(.post, base + "/close", token: token).status == .accepted)
                    _ = try await client.settled(id, token: token)
                    #expect(try await state()["state"] as? String == "closed")
                    #expect(try await state(list)["state"] as? String == "closed")
                }
            }
        }
    }

    @Test("requests the fast path answered are counted in /metrics as the router counts them (requests, durations, origin checks)")
    func countedAsTheRouterCounts() async throws {
        let http = DaemonMetrics()
        try await withMetricsFactory(http.factory) {
            try await APIFixture.run { client, fixture in
                let (id, token) = try await client.newSession()
                let page = "http://app.example:8080"
                #expect(try await client.call(.post, "/api/v1/origins/approve", token: fixture.adminToken, body: #"{"origin":"\#(page)"}"#).status == .ok)
                let request = "GET /api/v1/sessions/\(id) HTTP/1.1\r\nHost: localhost:7011\r\nOrigin: \(page)\r\nAuthorization: Bearer \(token)\r\n\r\n"
                let batch = String(repeating: request, count: 5)
                @Sendable func counts() async throws -> (requests: Double, durations: Double, approved: Double) {
                    let scrape = Scrape(String(decoding: http.exposition(MetricsSnapshot()), as: UTF8.self))
                    let route = ["http_route": "/api/v1/sessions/{id}", "http_request_method": "GET", "http_response_status_code": "200"]
                    let origins = try await client.scrape(fixture.adminToken)
                    return (
                        scrape.value("vmsessiond_http_requests_total", route) ?? 0,
                        scrape.value("vmsessiond_http_request_duration_seconds_count", route) ?? 0,
                        origins.value("vmsessiond_origin_checks_total", ["decision": "approved"]) ?? 0)
                }
                try await fixture.live.run { fast, slow in
                    let start = try await counts()
                    #expect(try await RawConnection.exchange(port: slow, batch, answers: 5).count == 5)
                    let afterSlow = try await counts()
                    let answered = fixture.live.readFastPath.answeredCount
                    #expect(try await RawConnection.exchange(port: fast, batch, answers: 5).count == 5)
                    #expect(fixture.live.readFastPath.answeredCount - answered == 5)
                    let afterFast = try await counts()
                    #expect(afterSlow.requests - start.requests == 5)
                    #expect(afterFast.requests - afterSlow.requests == 5)
                    #expect(afterSlow.durations - start.durations == 5)
                    #expect(afterFast.durations - afterSlow.durations == 5)
                    #expect(afterSlow.approved - start.approved == 5)
                    #expect(afterFast.approved - afterSlow.approved == 5)
                }
            }
        }
    }
}

/// The fixture's routers served twice on loopback ports, as the daemon serves them: with the fast paths (reads and
/// event streams), and without. Built where the routers are made (they are not `Sendable`); run by the tests that use them.
final class LiveServers: Sendable {
    private let servers: [any Service]
    private let ports: PortBox
    let readFastPath: ReadFastPath
    let eventsFastPath: EventStreamFastPath

    init(routers: VMSessionAPI.Routers) {
        let ports = PortBox()
        servers = [true, false].map { fastPath -> any Service in
            VMSessionAPI.buildApplication(
                routers: routers, host: "127.0.0.1", port: 0, logger: Logger(label: "test"), readFastPath: fastPath,
                eventsFastPath: fastPath
            ) { port in ports.set(fastPath, port) }
        }
        self.ports = ports
        readFastPath = routers.readFastPath
        eventsFastPath = routers.eventsFastPath
    }

    /// Serves both while `body` runs with their ports, then shuts them down.
    func run(_ body: @Sendable (_ fast: Int, _ slow: Int) async throws -> Void) async throws {
        try await run { fast, slow, _ in try await body(fast, slow) }
    }

    /// Serves both while `body` runs with their ports and a way to begin their graceful shutdown, then shuts them down.
    func run(_ body: @Sendable (_ fast: Int, _ slow: Int, _ shutDown: @Sendable () async -> Void) async throws -> Void) async throws {
        let group = ServiceGroup(configuration: .init(services: servers, logger: Logger(label: "test")))
        try await withThrowingTaskGroup { tasks in
            tasks.addTask { try await group.run() }
            do {
                var bound: (Int, Int)?
                for _ in 0..<1000 {
                    bound = ports.both
                    if bound != nil { break }
                    try await Task.sleep(for: .milliseconds(10))
                }
                let (fast, slow) = try #require(bound)
                try await body(fast, slow) { await group.triggerGracefulShutdown() }
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    private final class PortBox: Sendable {
        private let ports = Mutex<[Bool: Int]>([:])

        func set(_ fastPath: Bool, _ port: Int) { ports.withLock { $0[fastPath] = port } }

        var both: (Int, Int)? { ports.withLock { ports in ports[true].flatMap { fast in ports[false].map { (fast, $0) } } } }
    }
}

/// One answer as read off the wire: its status line, its header lines in order (the `Date` value aside, checked
/// to be current), and its body.
struct RawAnswer: Equatable {
    let status: String
    let headers: [String]
    let body: [UInt8]
}

/// A raw HTTP/1 connection: requests written as given (pipelined when several), answers parsed as they come.
final class RawConnection {
    private var inbound: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    private var buffer = ByteBuffer()
    private var ended = false

    private init(inbound: NIOAsyncChannelInboundStream<ByteBuffer>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) {
        self.inbound = inbound.makeAsyncIterator()
        self.outbound = outbound
    }

    static func open<Result: Sendable>(port: Int, _ body: (RawConnection) async throws -> Result) async throws -> Result {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
        }
        // A server that never answers fails the test instead of hanging it.
        let deadline = channel.channel.eventLoop.scheduleTask(in: .seconds(20)) { channel.channel.close(promise: nil) }
        defer { deadline.cancel() }
        return try await channel.executeThenClose { inbound, outbound in
            try await body(RawConnection(inbound: inbound, outbound: outbound))
        }
    }

    /// Writes `request` on a new connection and reads `answers` answers (fewer if the server closes first).
    static func exchange(port: Int, _ request: String, answers: Int = 1, heads: Set<Int> = []) async throws -> [RawAnswer] {
        try await open(port: port) { connection in try await connection.exchange(request, answers: answers, heads: heads) }
    }

    /// Writes `request` and reads `answers` answers; `heads` are the indexes of answers to HEAD requests (no body).
    func exchange(_ request: String, answers count: Int = 1, heads: Set<Int> = []) async throws -> [RawAnswer] {
        try await outbound.write(ByteBuffer(string: request))
        var answers: [RawAnswer] = []
        while answers.count < count {
            if let answer = try parse(head: heads.contains(answers.count)) {
                answers.append(answer)
                continue
            }
            if ended { break }
            guard var chunk = try await inbound.next() else {
                ended = true
                continue
            }
            buffer.writeBuffer(&chunk)
        }
        return answers
    }

    /// One whole answer from the bytes read so far, or nil until it is all there.
    private func parse(head isHead: Bool) throws -> RawAnswer? {
        let bytes = Array(buffer.readableBytesView)
        guard let end = bytes.indices.dropLast(3).first(where: { bytes[$0..<$0 + 4].elementsEqual("\r\n\r\n".utf8) }) else { return nil }
        var lines = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let status = lines.removeFirst()
        var length = 0
        var headers: [String] = []
        for line in lines {
            let name = line.prefix { $0 != ":" }.lowercased()
            let value = line.drop { $0 != ":" }.dropFirst().trimmingCharacters(in: .whitespaces)
            if name == "content-length" { length = Int(value) ?? -1 }
            #expect(name != "transfer-encoding", "answers of known length only")
            if name == "date" {
                #expect(Self.isCurrent(date: value), "Date: \(value)")
                headers.append("\(line.prefix { $0 != ":" }): (now)")
            } else {
                headers.append(line)
            }
        }
        let bodyLength = isHead ? 0 : length
        guard bytes.count >= end + 4 + bodyLength else { return nil }
        buffer.moveReaderIndex(forwardBy: end + 4 + bodyLength)
        return RawAnswer(status: status, headers: headers, body: Array(bytes[(end + 4)..<(end + 4 + bodyLength)]))
    }

    private static func isCurrent(date text: String) -> Bool {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        guard let date = formatter.date(from: text) else { return false }
        return abs(date.timeIntervalSinceNow) < 5
    }
}
