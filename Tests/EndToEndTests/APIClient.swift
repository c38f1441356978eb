import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import VMSessionClient

/// A small client for the daemon's REST API and its SSE streams, over AsyncHTTPClient.
struct APIClient: Sendable {
    let port: Int
    var base: String { "http://127.0.0.1:\(port)" }

    struct Reply: @unchecked Sendable {
        let status: Int
        let json: [String: Any]
        subscript(key: String) -> Any? { json[key] }
        var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
    }

    func call(_ method: HTTPMethod, _ path: String, token: String? = nil, body: String? = nil, headers: [(String, String)] = []) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.replaceOrAdd(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let buffer = try await response.body.collect(upTo: 16 * 1024 * 1024)
        let json = (try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView))) as? [String: Any] ?? [:]
        return Reply(status: Int(response.status.code), json: json)
    }

    /// A plain GET of any URL, returning the body as text.
    static func raw(_ url: String) async throws -> String {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
        let buffer = try await response.body.collect(upTo: 1 << 20)
        return String(buffer: buffer)
    }

    /// The typed client that vmsessionctl uses too, for the calls that need no raw view of the answer.
    func typed(token: String? = nil) -> VMSessionClient { VMSessionClient(baseURL: base, token: token) }

    func newSession(_ name: String, secret: String = "s3cret") async throws -> (id: String, token: String) {
        let grant = try await typed().requestSession(name: name, secret: secret)
        #expect(grant.created, "\(name) was new")
        return (grant.session.id, grant.token)
    }

    /// Follows a session's SSE stream while `body` runs; events go to the returned log.
    func withEvents<T: Sendable>(
        session id: String, token: String, lastEventID: Int64? = nil, since: Int64? = nil,
        _ body: @Sendable (EventLog) async throws -> T
    ) async throws -> T {
        let log = EventLog()
        var path = "/api/v1/sessions/\(id)/events?token=\(token)"
        if let since { path += "&since=\(since)" }
        var request = HTTPClientRequest(url: base + path)
        if let lastEventID { request.headers.add(name: "Last-Event-ID", value: "\(lastEventID)") }
        let response = try await HTTPClient.shared.execute(request, timeout: .hours(1))
        #expect(response.status == .ok)
        #expect(response.headers.first(name: "Content-Type")?.hasPrefix("text/event-stream") == true)
        return try await withThrowingTaskGroup { group in
            group.addTask {
                var parser = SSEParser()
                for try await buffer in response.body {
                    for event in parser.feed(String(buffer: buffer)) { await log.append(event) }
                }
                return nil as T?
            }
            let result = try await body(log)
            group.cancelAll()
            return result
        }
    }
}

/// One SSE event as received.
struct ReceivedEvent: @unchecked Sendable {
    let id: Int64
    let type: String
    let data: [String: Any]
    var payload: [String: Any] { data["data"] as? [String: Any] ?? [:] }
}

/// The events a stream delivered so far, and a way to wait for one.
actor EventLog {
    private(set) var events: [ReceivedEvent] = []

    func append(_ event: ReceivedEvent) { events.append(event) }

    /// Waits (up to `timeout`) for an event of `type` after position `after` that satisfies `match`.
    func next(
        _ type: String, after index: Int = 0, timeout: Duration = .seconds(120), where match: @Sendable ([String: Any]) -> Bool = { _ in true }
    ) async throws -> ReceivedEvent {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if let found = events.dropFirst(index).first(where: { $0.type == type && match($0.payload) }) { return found }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw DaemonError("no '\(type)' event within \(timeout); got \(events.map(\.type))")
    }

    /// Waits for the session to reach `state` on the stream.
    func state(_ state: String, timeout: Duration = .seconds(120)) async throws -> ReceivedEvent {
        try await next("stateChanged", timeout: timeout) { $0["state"] as? String == state }
    }

    var count: Int { events.count }
}

/// Splits a text/event-stream into events (id, event, data lines; comments ignored).
struct SSEParser {
    private var pending = ""

    mutating func feed(_ text: String) -> [ReceivedEvent] {
        pending += text
        var events: [ReceivedEvent] = []
        while let range = pending.range(of: "\n\n") {
            let block = pending[..<range.lowerBound]
            pending.removeSubrange(..<range.upperBound)
            var id: Int64?
            var type = "message"
            var data = ""
            for line in block.split(separator: "\n") {
                if line.hasPrefix("id: ") { id = Int64(line.dropFirst(4)) }
                if line.hasPrefix("event: ") { type = String(line.dropFirst(7)) }
                if line.hasPrefix("data: ") { data += line.dropFirst(6) }
            }
            guard let id, let object = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any] else { continue }
            events.append(ReceivedEvent(id: id, type: type, data: object))
        }
        return events
    }
}
