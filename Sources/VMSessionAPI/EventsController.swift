import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ServiceLifecycle
import VMSessionCore
import VMSessionDaemon

/// `GET /api/v1/sessions/{id}/events`: a session's events as Server-Sent Events.
///
/// The stream subscribes to live events first, then replays from the store everything after the
/// client's `Last-Event-ID` (or `?since=`), then passes live events on, skipping those already replayed,
/// so that nothing is lost or repeated across a reconnect. A comment line every ``heartbeat`` keeps
/// proxies from closing it and tells the daemon when the client is gone.
struct EventsController {
    let sessions: SessionsController
    let events: EventHub
    let limiter: StreamLimiter
    var heartbeat: Duration = .seconds(15)

    static let lastEventID = HTTPField.Name("Last-Event-ID")

    func addRoutes(to router: Router<APIRequestContext>) {
        router.group("/api/v1/sessions/:id", context: SessionRequestContext.self).get("events", use: sessionStream)
        router.get("/api/v1/events", use: allStream)
    }

    /// One session's events.
    @Sendable func sessionStream(_ request: Request, context: SessionRequestContext) async throws -> Response {
        let caller = context.caller
        return try stream(of: caller.session, request, owner: Self.owner(caller.role, token: caller.token))
    }

    /// How many tokens one stream may carry (a page follows at most `limits.sessionsPerOrigin` sessions;
    /// this bounds the work and the URL of one request, whatever the limits are set to).
    static let maxTokensPerStream = 256

    /// Every session the tokens may see, in one stream: all of them for the admin token; with session
    /// tokens (`?token=` repeated, and/or `Authorization: Bearer`), the union of their sessions. A page that
    /// follows many sessions holds one connection for all of them instead of one each (browsers allow six
    /// per origin over HTTP/1.1). Event ids are the daemon's, so `Last-Event-ID` resumes the whole stream.
    @Sendable func allStream(_ request: Request, context: APIRequestContext) async throws -> Response {
        let (scope, owners) = try Self.scope(of: Self.tokens(in: request), access: sessions.manager.access)
        return try stream(ofAny: scope, request, owners: owners)
    }

    /// The sessions one stream of `/api/v1/events` follows (nil: all) and whose access it stands on, for `tokens`
    /// (here and on the fast path, ``EventStreamFastPath``).
    static func scope(of tokens: [String], access: AccessRegistry) throws(VMSessionError) -> (scope: Set<SessionID>?, owners: [EventHub.Owner]) {
        guard tokens.count <= Self.maxTokensPerStream else {
            throw VMSessionError(
                .invalidArgument, "One event stream carries at most \(Self.maxTokensPerStream) tokens; got \(tokens.count).")
        }
        // Every token must be valid (401 names none of them: the refusal is the same whichever it is).
        var owners: [EventHub.Owner] = []
        var scope: Set<SessionID>? = []
        for token in tokens.isEmpty ? [nil] : tokens.map(Optional.some) {
            let caller = try access.caller(token: token)
            owners.append(Self.owner(caller, token: token))
            switch caller {
            case .admin: scope = nil
            case .session(let id): scope?.insert(id)
            }
        }
        return (scope, owners)
    }

    /// The tokens of a request: the bearer token, then each `token` query value, without repeats.
    static func tokens(in request: Request) -> [String] {
        var tokens: [String] = []
        if let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") {
            tokens.append(String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces))
        }
        for value in request.uri.queryParameters.getAll("token") where !tokens.contains(value) { tokens.append(value) }
        return tokens
    }

    /// Whose stream this is: revoking that token ends it (``SessionManager/revokeTokens(of:token:)``).
    static func owner(_ caller: AccessRegistry.Caller, token: String?) -> EventHub.Owner {
        let hash = token.map(SecretHasher.tokenHash)
        switch caller {
        case .admin: return EventHub.Owner(session: nil, tokenHash: hash)
        case .session(let id): return EventHub.Owner(session: id, tokenHash: hash)
        }
    }

    func stream(of id: SessionID?, _ request: Request, owner: EventHub.Owner) throws -> Response {
        try stream(ofAny: id.map { [$0] }, request, owners: [owner])
    }

    /// The stream of the events of any of `scope` (nil: every session): replay, then live. A live event's
    /// frame was encoded once by the hub for every stream (``EventHub/subscribeFrames(toAny:owners:)``); the
    /// heartbeat timer puts its comments in the same queue, so an event reaches this writer in one hand-over.
    func stream(ofAny scope: Set<SessionID>?, _ request: Request, owners: [EventHub.Owner]) throws -> Response {
        let since = try Self.replayStart(request)
        // Every stream takes a slot of the daemon's total; web pages are also capped per origin.
        let streamKey = request.headers[.origin]
        try limiter.acquire(streamKey)
        let live = events.subscribeFrames(toAny: scope, owners: owners)
        let store = events.store
        let heartbeat = self.heartbeat
        let limiter = self.limiter
        return Response(
            status: .ok, headers: Self.headers,
            body: ResponseBody { writer in
                defer { limiter.release(streamKey) }
                try await writer.write(Self.retry)
                var lastSent = since ?? 0
                if let since {
                    // Retention may have pruned what the client asks for: say so instead of replaying a hole.
                    let pruned = try store.prunedThrough(anyOf: scope)
                    if since < pruned { try await writer.write(Self.droppedFrame(after: since, through: pruned)) }
                    var cursor = since
                    while true {
                        let page = try store.events(forAny: scope, after: cursor, limit: Self.replayPage)
                        for event in page { try await writer.write(Self.frame(event)) }
                        guard let last = page.last else { break }
                        cursor = last.id
                        lastSent = last.id
                        if page.count < Self.replayPage { break }
                    }
                }
                try await withThrowingTaskGroup { group in
                    group.addTask {
                        while !Task.isCancelled {
                            try await Task.sleep(for: heartbeat)
                            live.heartbeat()
                        }
                    }
                    // Graceful shutdown ends the subscription (what is queued still goes out). Not
                    // `cancelOnGracefulShutdown()`: its merge runs a task of its own per stream and passes
                    // every frame through it, two more task wake-ups per event and stream.
                    try await withGracefulShutdownHandler {
                        for await item in live.frames {
                            switch item {
                            case .frame(let id, let frame) where id > lastSent:
                                try await writer.write(frame)
                                lastSent = id
                            case .frame: continue
                            case .heartbeat: try await writer.write(Self.keepAlive)
                            }
                        }
                    } onGracefulShutdown: {
                        live.end()
                    }
                    group.cancelAll()
                }
                try await writer.finish(nil)
            })
    }

    static let keepAlive = ByteBuffer(string: ": keep-alive\n\n")
    /// The first bytes of every stream: how long a browser waits before it reconnects.
    static let retry = ByteBuffer(string: "retry: 2000\n\n")
    /// How many events one replay read takes from the store.
    static let replayPage = 1000

    /// The headers of a stream, as the route sets them (the middleware adds the rest).
    static var headers: HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return headers
    }

    /// Where replay starts: after `Last-Event-ID`, else after `?since=`, else nowhere (live only).
    static func replayStart(_ request: Request) throws(VMSessionError) -> Int64? {
        let header: String? = lastEventID.flatMap { request.headers[$0] }
        let query: String? = request.uri.queryParameters.get("since").map { String($0) }
        let text = header ?? query
        guard let text else { return nil }
        guard let value = Int64(text), value >= 0 else {
            throw VMSessionError(.invalidArgument, "'Last-Event-ID' (or 'since') must be a non-negative event id; got '\(text)'.")
        }
        return value
    }

    /// Sent first when a replay reaches into events that retention pruned: events after `after` up to and
    /// including `through` are gone. It has no `id`, so it does not move the client's Last-Event-ID.
    static func droppedFrame(after: Int64, through: Int64) -> ByteBuffer {
        let data = #"{"after":\#(after),"through":\#(through),"message":"Events \#(after + 1) to \#(through) were removed by the daemon's retention policy and cannot be replayed."}"#
        return ByteBuffer(string: "event: eventsDropped\ndata: \(data)\n\n")
    }

    /// One SSE frame (``EventHub/frame(_:)``, the same for replayed and live events).
    static func frame(_ event: SessionEvent) -> ByteBuffer { EventHub.frame(event) }
}
