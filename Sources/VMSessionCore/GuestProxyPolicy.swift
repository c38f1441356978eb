import Foundation

/// The decisions of the guest-API proxy (`…/sessions/{id}/guest/{path}`), as values with no I/O.
///
/// Why it exists: the daemon stands between web pages and a guest's HTTP server that knows nothing of
/// tokens or origins. What passes that gate, in each direction, is decided here, so that it can be tested
/// exhaustively and stays the same whoever moves the bytes:
/// - what a request may be (path, size) before anything is sent to the guest;
/// - which request headers the guest sees (never the session's token, cookies or hop-by-hop headers);
/// - which response headers the page sees (never the guest's CORS answer: the daemon decides CORS; never
///   a cookie, which would land on the daemon's own origin and be sent to every session's routes);
/// - how many requests one session may have in flight (``GuestProxyAdmission``).
public struct GuestProxyPolicy: Equatable, Sendable {
    /// The largest request body passed to the guest, in bytes.
    public var maximumRequestBytes: Int
    /// How long one proxied request may take, from the daemon's first byte to the guest's last.
    public var timeout: Duration
    /// How many proxied requests one session may have in flight at once.
    public var concurrentPerSession: Int
    /// The longest path (with its query) passed on.
    public static let maximumPathBytes = 8192

    public static let defaults = GuestProxyPolicy(maximumRequestBytes: 8 << 20, timeout: .seconds(60), concurrentPerSession: 8)

    public init(maximumRequestBytes: Int, timeout: Duration, concurrentPerSession: Int) {
        self.maximumRequestBytes = maximumRequestBytes
        self.timeout = timeout
        self.concurrentPerSession = concurrentPerSession
    }

    /// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1), plus the proxy ones.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade",
    ]

    /// Request headers the guest never sees: the daemon's credentials and the page's cookies for the daemon,
    /// the daemon's own Host (the client sets the guest's), and the origin (the daemon already decided it).
    static let withheldFromGuest: Set<String> = ["authorization", "cookie", "host", "origin", "content-length", "expect"]

    /// Response headers the page never sees from the guest: its CORS answer (the daemon's applies), its
    /// cookies (they would be scoped to the daemon's origin, i.e. to every session), and what only the
    /// daemon may say about itself.
    static func withheldFromPage(_ name: String) -> Bool {
        name.hasPrefix("access-control-") || ["set-cookie", "set-cookie2", "strict-transport-security", "alt-svc", "content-length", "vary"]
            .contains(name)
    }

    /// Names a `Connection` header lists: they are hop-by-hop for this message too.
    static func connectionTokens(_ headers: [(name: String, value: String)]) -> Set<String> {
        var tokens = Set<String>()
        for header in headers where header.name.lowercased() == "connection" {
            for token in header.value.split(separator: ",") { tokens.insert(token.trimmingCharacters(in: .whitespaces).lowercased()) }
        }
        return tokens
    }

    /// The request headers passed to the guest.
    public func requestHeaders(_ headers: [(name: String, value: String)]) -> [(name: String, value: String)] {
        let listed = Self.connectionTokens(headers)
        return headers.filter { header in
            let name = header.name.lowercased()
            return !Self.hopByHop.contains(name) && !Self.withheldFromGuest.contains(name) && !listed.contains(name)
        }
    }

    /// The guest's response headers passed to the page; a redirect to the guest's own path is rewritten to
    /// the same path under `base` (the session's proxied URL, ending in `/guest`).
    public func responseHeaders(_ headers: [(name: String, value: String)], base: String) -> [(name: String, value: String)] {
        let listed = Self.connectionTokens(headers)
        return headers.compactMap { header in
            let name = header.name.lowercased()
            guard !Self.hopByHop.contains(name), !Self.withheldFromPage(name), !listed.contains(name) else { return nil }
            if name == "location" || name == "content-location" {
                // Only a path on the guest itself (`/x`, not `//host/x`) is rewritten; other URLs point elsewhere.
                if header.value.hasPrefix("/") && !header.value.hasPrefix("//") { return (header.name, base + header.value) }
            }
            return header
        }
    }

    /// What is wrong with a request's declared body size, if anything.
    public func checkDeclaredLength(_ contentLength: String?) throws(VMSessionError) {
        guard let contentLength else { return }
        guard let length = Int(contentLength.trimmingCharacters(in: .whitespaces)), length >= 0 else {
            throw VMSessionError(.invalidArgument, "The Content-Length '\(contentLength.prefix(40))' is not a byte count.")
        }
        if length > maximumRequestBytes { throw bodyTooLarge() }
    }

    /// The error for a body that passed ``maximumRequestBytes`` (declared, or counted as it streamed).
    public func bodyTooLarge() -> VMSessionError {
        VMSessionError(.payloadTooLarge, "A request to the guest's API may carry at most \(maximumRequestBytes) bytes.")
    }

    /// The path and query sent to the guest: `rest` is what follows `/guest` in the daemon's path (empty or
    /// starting with `/`); `query` is the daemon's query without the daemon's own `token` parameter.
    /// Refused if it is longer than ``maximumPathBytes`` or holds anything but printable ASCII.
    public static func guestTarget(rest: String, query: String?) throws(VMSessionError) -> String {
        var target = rest.isEmpty ? "/" : rest
        guard target.hasPrefix("/") else { throw VMSessionError(.notFound, "There is no such endpoint.") }
        if let query {
            let kept = query.split(separator: "&", omittingEmptySubsequences: true)
                .filter { $0 != "token" && !$0.hasPrefix("token=") }
            if !kept.isEmpty { target += "?" + kept.joined(separator: "&") }
        }
        guard target.utf8.count <= maximumPathBytes else {
            throw VMSessionError(.invalidArgument, "The guest path may be at most \(maximumPathBytes) bytes long.")
        }
        guard target.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw VMSessionError(.invalidArgument, "The guest path must be printable ASCII (percent-encode the rest).")
        }
        return target
    }
}

/// Counts the proxied requests each session has in flight, and refuses past the policy's limit.
///
/// A value: its owner keeps it behind a lock and performs no I/O while holding it.
public struct GuestProxyAdmission: Equatable, Sendable {
    public let limit: Int
    public private(set) var inFlight: [SessionID: Int] = [:]

    public init(limit: Int) { self.limit = limit }

    /// Takes a slot for `session`; false (and nothing taken) if it has `limit` requests in flight already.
    public mutating func admit(_ session: SessionID) -> Bool {
        let count = inFlight[session, default: 0]
        guard count < limit else { return false }
        inFlight[session] = count + 1
        return true
    }

    /// Gives a slot back; the entry goes when its last slot does.
    public mutating func release(_ session: SessionID) {
        let count = inFlight[session, default: 0] - 1
        inFlight[session] = count > 0 ? count : nil
    }
}
