import Testing
import VMSessionCore

/// The guest-API proxy's decisions, with no I/O: what the guest is sent, what the page gets back, what is
/// refused up front, and how many requests a session may have in flight.
@Suite("Guest proxy policy")
struct GuestProxyPolicyTests {
    let policy = GuestProxyPolicy(maximumRequestBytes: 100, timeout: .seconds(5), concurrentPerSession: 2)

    func names(_ headers: [(name: String, value: String)]) -> [String] { headers.map { $0.name.lowercased() } }

    @Test("the guest is sent no credentials, cookies, Host, Origin or hop-by-hop header, nor one that Connection lists")
    func requestHeadersFiltered() {
        let sent = policy.requestHeaders([
            ("Authorization", "Bearer secret"), ("Cookie", "a=b"), ("Host", "127.0.0.1:7011"), ("Origin", "http://page"),
            ("Connection", "keep-alive, X-Private"), ("X-Private", "1"), ("Keep-Alive", "5"), ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"), ("Upgrade", "websocket"), ("Proxy-Authorization", "x"), ("Content-Length", "3"),
            ("Expect", "100-continue"), ("Content-Type", "application/json"), ("Accept", "*/*"), ("X-Request", "kept"),
        ])
        #expect(names(sent) == ["content-type", "accept", "x-request"])
    }

    @Test("the page gets no guest CORS header, cookie, HSTS or hop-by-hop header; the rest as the guest sent it")
    func responseHeadersFiltered() {
        let kept = policy.responseHeaders(
            [
                ("Access-Control-Allow-Origin", "*"), ("access-control-allow-credentials", "true"), ("Set-Cookie", "a=b"),
                ("Strict-Transport-Security", "max-age=1"), ("Connection", "close, X-Hop"), ("X-Hop", "1"),
                ("Transfer-Encoding", "chunked"), ("Content-Length", "5"), ("Vary", "Origin"), ("Content-Type", "text/plain"),
                ("ETag", "\"1\""), ("X-Guest", "yes"),
            ], base: "/api/v1/sessions/S/guest")
        #expect(names(kept) == ["content-type", "etag", "x-guest"])
        #expect(kept.first { $0.name == "X-Guest" }?.value == "yes")
    }

    @Test("a redirect to the guest's own path is rewritten under the proxy; one to another host or protocol-relative is not")
    func locationRewritten() {
        let base = "/api/v1/sessions/S/guest"
        let rewrite = { (value: String) in policy.responseHeaders([("Location", value)], base: base).first?.value }
        #expect(rewrite("/login?next=%2F") == base + "/login?next=%2F")
        #expect(rewrite("//evil.example/x") == "//evil.example/x")
        #expect(rewrite("https://example.org/") == "https://example.org/")
        #expect(rewrite("relative") == "relative")
    }

    @Test("a declared body up to the limit passes; above it is payload_too_large, a non-number invalid_argument")
    func declaredLength() throws {
        try policy.checkDeclaredLength(nil)
        try policy.checkDeclaredLength("100")
        #expect(throws: VMSessionError.self) { try policy.checkDeclaredLength("101") }
        for bad in ["-1", "ten", "1e3", ""] {
            let error = #expect(throws: VMSessionError.self) { try policy.checkDeclaredLength(bad) }
            #expect(error?.code == .invalidArgument, "\(bad)")
        }
        let error = #expect(throws: VMSessionError.self) { try policy.checkDeclaredLength("999999999999999999999999") }
        #expect(error?.code == .invalidArgument, "too large for an Int is not a byte count either")
        #expect(policy.bodyTooLarge().code == .payloadTooLarge)
    }

    @Test("the guest's target: the rest of the path, the query without the daemon's token, bounded and printable")
    func guestTarget() throws {
        #expect(try GuestProxyPolicy.guestTarget(rest: "", query: nil) == "/")
        #expect(try GuestProxyPolicy.guestTarget(rest: "/", query: "token=abc") == "/")
        #expect(try GuestProxyPolicy.guestTarget(rest: "/a/b", query: "x=1&token=abc&token&y=%20") == "/a/b?x=1&y=%20")
        #expect(try GuestProxyPolicy.guestTarget(rest: "/a", query: "tokens=1") == "/a?tokens=1")
        for bad in ["/a b", "/a\u{7f}", "/é"] {
            #expect(throws: VMSessionError.self) { try GuestProxyPolicy.guestTarget(rest: bad, query: nil) }
        }
        let long = "/" + String(repeating: "a", count: GuestProxyPolicy.maximumPathBytes)
        let error = #expect(throws: VMSessionError.self) { try GuestProxyPolicy.guestTarget(rest: long, query: nil) }
        #expect(error?.code == .invalidArgument)
    }

    @Test("admission: up to the limit per session, sessions apart, a released slot can be taken again, no entry left behind")
    func admission() {
        var admission = GuestProxyAdmission(limit: 2)
        let a = SessionID(), b = SessionID()
        let first = admission.admit(a), second = admission.admit(a), third = admission.admit(a)
        #expect(first && second && !third)
        #expect(admission.inFlight[a] == 2, "a refusal takes nothing")
        let other = admission.admit(b)
        #expect(other, "another session has slots of its own")
        admission.release(a)
        let again = admission.admit(a)
        #expect(again)
        admission.release(a)
        admission.release(a)
        admission.release(b)
        #expect(admission.inFlight.isEmpty)
        admission.release(a)
        #expect(admission.inFlight.isEmpty, "a stray release does not go negative")
    }
}
