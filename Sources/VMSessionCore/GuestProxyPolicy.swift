import Foundation

/// The decisions of the guest-API proxy (`…/sessions/{id}/guest/{path}`), as values with no I/O.
///
/// Why it exists: the daemon stands between web pages and a guest's HTTP server that knows nothing of
/// tokens or origins. What passes that gate, in each direction, is decided here, so that it can be tested
/// exhaustively and stays the same whoever moves the bytes:
/// - what a request may be (path, size, not a service worker's script) before anything is sent to the guest;
/// - which request headers the guest sees (never the session's token, cookies, `Referer` or hop-by-hop headers);
/// - which response headers the page sees: the guest's content is served from the daemon's origin, so
///   nothing the guest says may act on that origin (cookies, service-worker scope, site data, client hints,
///   reporting, authentication prompts, redirects elsewhere), and every answer is sandboxed
///   (``contentSecurityPolicy``) so that a guest page runs in an opaque origin of its own;
/// - how many requests one session may have in flight (``GuestProxyAdmission``).
public struct GuestProxyPolicy: Equatable, Sendable {
    /// The largest request body passed to the guest, in bytes.
    public var maximumRequestBytes: Int
    /// How long one proxied exchange may take, both ways: from the daemon's first byte to the guest (the
    /// request body's upload included) to the guest's last byte passed on to the page.
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

    /// The CSP every proxied answer carries in place of the guest's own. `sandbox` without
    /// `allow-same-origin` gives a guest document an opaque origin: it cannot read the daemon's pages,
    /// cookies or `sessionStorage` (the admin token), register a service worker, or call the daemon's API as
    /// the daemon's own page (its requests carry `Origin: null`, which the Origin guard refuses). What is
    /// allowed is what a guest's web UI needs for itself: its scripts, forms, dialogs, downloads, and popups
    /// (which inherit the sandbox). Left out: `allow-same-origin` (the daemon's origin),
    /// `allow-top-navigation*` (steering the tab it is framed in), `allow-popups-to-escape-sandbox` (a popup
    /// without the sandbox), and the device features (pointer/orientation lock, presentation) no guest API needs.
    public static let contentSecurityPolicy = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"

    /// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1), plus the proxy ones.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade",
    ]

    /// Request headers the guest never sees: the daemon's credentials and the page's cookies for the daemon,
    /// the daemon's own Host (the client sets the guest's), the origin (the daemon already decided it), and
    /// `Referer`, which names the page's URL and so the `?token=` a guest page was opened with.
    static let withheldFromGuest: Set<String> = [
        "authorization", "cookie", "host", "origin", "content-length", "expect", "referer", "forwarded", "x-forwarded-for",
        "x-forwarded-host", "x-forwarded-proto",
    ]

    /// Response headers the page never sees from the guest, because they would act on the daemon's origin
    /// (every session's guest and the daemon's own page share it) or say what only the daemon may say:
    /// - its CORS answer (the daemon's applies) and `Vary` (the daemon sets it with CORS);
    /// - cookies (scoped to the daemon's origin, so sent to every session's routes);
    /// - `Service-Worker-Allowed` (a worker's scope over the daemon's pages), `Clear-Site-Data` (wipes the
    ///   origin's storage, the admin token included), `Refresh` (a redirect that is not a `Location`);
    /// - its own CSP (replaced by ``contentSecurityPolicy``) and report-only CSP, `Reporting-Endpoints`,
    ///   `Report-To` and `NEL` (reports about the daemon's origin, with URLs that may hold a token, sent where
    ///   the guest says);
    /// - origin-wide settings: HSTS, `Alt-Svc`, `Origin-Agent-Cluster`, client hints (`Accept-CH`,
    ///   `Critical-CH`), `Set-Login`, `Speculation-Rules`, and every `Sec-` header (browser-reserved, such as
    ///   device-bound session registration);
    /// - document policies: `Permissions-Policy`, `Feature-Policy`, `Document-Policy`, `Cross-Origin-Opener-Policy`
    ///   (the daemon decides what its URLs may do and whom they share a browsing context group with);
    /// - `WWW-Authenticate` and `Authentication-Info` (a credentials prompt on the daemon's origin).
    static let withheldFromPage: Set<String> = [
        "set-cookie", "set-cookie2", "strict-transport-security", "alt-svc", "content-length", "vary",
        "service-worker-allowed", "clear-site-data", "refresh", "content-security-policy", "content-security-policy-report-only",
        "reporting-endpoints", "report-to", "nel", "origin-agent-cluster", "accept-ch", "accept-ch-lifetime", "critical-ch",
        "set-login", "speculation-rules", "permissions-policy", "feature-policy", "document-policy", "require-document-policy",
        "cross-origin-opener-policy", "www-authenticate", "authentication-info", "x-content-type-options", "referrer-policy",
    ]

    static func isWithheldFromPage(_ name: String) -> Bool {
        name.hasPrefix("access-control-") || name.hasPrefix("sec-") || withheldFromPage.contains(name)
    }

    /// `Link` relations that make the browser fetch or install something for the daemon's origin; a `Link`
    /// header naming one is dropped whole (pagination and other descriptive links pass).
    static let fetchingLinkRelations = ["preload", "modulepreload", "prefetch", "preconnect", "dns-prefetch", "prerender", "serviceworker", "manifest", "compression-dictionary"]

    /// Names a `Connection` header lists: they are hop-by-hop for this message too.
    static func connectionTokens(_ headers: [(name: String, value: String)]) -> Set<String> {
        var tokens = Set<String>()
        for header in headers where header.name.lowercased() == "connection" {
            for token in header.value.split(separator: ",") { tokens.insert(token.trimmingCharacters(in: .whitespaces).lowercased()) }
        }
        return tokens
    }

    /// What is wrong with a request before it goes to the guest, from its headers: a service worker's
    /// script (`Service-Worker: script`, or `Sec-Fetch-Dest: serviceworker`) is refused with `not_allowed`
    /// (403). The sandbox already keeps a guest page from registering one; this keeps a guest's script from
    /// ever being installed as a worker over the daemon's origin by anything else.
    public func checkRequest(_ headers: [(name: String, value: String)]) throws(VMSessionError) {
        for header in headers {
            let name = header.name.lowercased()
            let value = header.value.trimmingCharacters(in: .whitespaces).lowercased()
            if (name == "service-worker" && value == "script") || (name == "sec-fetch-dest" && value == "serviceworker") {
                throw VMSessionError(
                    .notAllowed, "A guest's script cannot be a service worker: it would run with the daemon's origin.")
            }
        }
    }

    /// The request headers passed to the guest. `secret` is the token the request presented (in
    /// `Authorization` or `?token=`): a header that carries it under any other name is withheld too.
    public func requestHeaders(_ headers: [(name: String, value: String)], secret: String? = nil) -> [(name: String, value: String)] {
        let listed = Self.connectionTokens(headers)
        return headers.filter { header in
            let name = header.name.lowercased()
            if let secret, !secret.isEmpty, header.value.contains(secret) { return false }
            return !Self.hopByHop.contains(name) && !Self.withheldFromGuest.contains(name) && !listed.contains(name)
        }
    }

    /// The guest's response headers passed to the page, with ``contentSecurityPolicy`` and
    /// `Referrer-Policy: no-referrer` added (in place of the guest's own). `base` is the
    /// session's proxied path (ending in `/guest`); `target` is the path and query the guest was asked for
    /// (relative redirects are resolved against it). A `Location` or `Content-Location` that stays on the
    /// guest is rewritten under `base`; one that leaves it (another host, `//host`, another scheme) is withheld,
    /// so the browser follows no redirect off the guest (the status and body pass as the guest sent them).
    public func responseHeaders(
        _ headers: [(name: String, value: String)], base: String, target: String = "/"
    ) -> [(name: String, value: String)] {
        let listed = Self.connectionTokens(headers)
        var passed: [(name: String, value: String)] = headers.compactMap { header in
            let name = header.name.lowercased()
            guard !Self.hopByHop.contains(name), !Self.isWithheldFromPage(name), !listed.contains(name) else { return nil }
            if name == "location" || name == "content-location" {
                guard let path = Self.guestPath(header.value, relativeTo: target) else { return nil }
                return (header.name, base + path)
            }
            if name == "link" {
                let value = header.value.lowercased()
                if Self.fetchingLinkRelations.contains(where: { value.contains($0) }) { return nil }
            }
            return header
        }
        passed.append(("Content-Security-Policy", Self.contentSecurityPolicy))
        // A guest page opened with `?token=` must not send its URL along with its requests.
        passed.append(("Referrer-Policy", "no-referrer"))
        return passed
    }

    /// `reference` (a `Location` the guest sent) as a path and query on the guest, resolved against the
    /// guest path `target` as a browser would (WHATWG URL: tabs and newlines dropped, `\` as `/`, `.`/`..`
    /// segments, also percent-encoded, removed), so that the result under the proxy's prefix can never climb
    /// out of it. Nil if it leaves the guest: an absolute URL, a scheme-relative `//host`, or anything the
    /// browser would read as one.
    public static func guestPath(_ reference: String, relativeTo target: String) -> String? {
        var text = String(reference.unicodeScalars.filter { $0 != "\t" && $0 != "\n" && $0 != "\r" })
        text = text.trimmingCharacters(in: CharacterSet(charactersIn: " ").union(.controlCharacters))
        text = text.replacingOccurrences(of: "\\", with: "/")
        guard text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f }) else { return nil }
        if text.hasPrefix("//") { return nil }
        // A scheme: letters, digits, `+`, `-`, `.` before the first `:`, ahead of any `/`, `?` or `#`.
        if let colon = text.firstIndex(of: ":") {
            let head = text[..<colon]
            if let first = head.first, first.isLetter, head.allSatisfy({ $0.isLetter || $0.isNumber || "+-.".contains($0) }) { return nil }
        }
        // Split off the fragment and the query.
        var rest = Substring(text)
        var suffix = ""
        if let hash = rest.firstIndex(of: "#") {
            suffix = String(rest[hash...])
            rest = rest[..<hash]
        }
        var query: String? = nil
        if let mark = rest.firstIndex(of: "?") {
            query = String(rest[mark...])
            rest = rest[..<mark]
        }
        let targetPath = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? "/"
        var path: String
        if rest.hasPrefix("/") {
            path = String(rest)
        } else if rest.isEmpty {
            path = targetPath
            if query == nil, let mark = target.firstIndex(of: "?") { query = String(target[mark...]) }
        } else {
            let directory = targetPath.lastIndex(of: "/").map { String(targetPath[...$0]) } ?? "/"
            path = directory + rest
        }
        return removingDotSegments(path) + (query ?? "") + suffix
    }

    /// RFC 3986 §5.2.4 on a path that starts with `/`, counting `%2e` as a dot as browsers do.
    static func removingDotSegments(_ path: String) -> String {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        var output: [Substring] = []
        for (index, segment) in segments.enumerated() {
            let plain = segment.lowercased().replacingOccurrences(of: "%2e", with: ".")
            let last = index == segments.count - 1
            if plain == "." {
                if last { output.append("") }
            } else if plain == ".." {
                if !output.isEmpty { output.removeLast() }
                if last { output.append("") }
            } else {
                output.append(segment)
            }
        }
        return "/" + output.joined(separator: "/")
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
