import Testing
import VMSessionCore

/// The guest-API proxy's decisions, with no I/O: what the guest is sent, what the page gets back, what is
/// refused up front, and how many requests a session may have in flight.
@Suite("Guest proxy policy")
struct GuestProxyPolicyTests {
    let policy = GuestProxyPolicy(maximumRequestBytes: 100, timeout: .seconds(5), concurrentPerSession: 2)

    func names(_ headers: [(name: String, value: String)]) -> [String] { headers.map { $0.name.lowercased() } }

    @Test("the guest is sent no credentials, cookies, Referer, Host, Origin or hop-by-hop header, nor one that Connection lists")
    func requestHeadersFiltered() {
        let sent = policy.requestHeaders([
            ("Authorization", "Bearer secret"), ("Cookie", "a=b"), ("Host", "127.0.0.1:7011"), ("Origin", "http://page"),
            ("Connection", "keep-alive, X-Private"), ("X-Private", "1"), ("Keep-Alive", "5"), ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"), ("Upgrade", "websocket"), ("Proxy-Authorization", "x"), ("Content-Length", "3"),
            ("Expect", "100-continue"), ("Referer", "http://127.0.0.1:7011/api/v1/sessions/S/guest/x.html?token=t0k"),
            ("Forwarded", "for=1.2.3.4"), ("X-Forwarded-For", "1.2.3.4"),
            ("Content-Type", "application/json"), ("Accept", "*/*"), ("X-Request", "kept"),
        ])
        #expect(names(sent) == ["content-type", "accept", "x-request"])
    }

    @Test("a header that carries the request's token under any name is withheld; without a token nothing more is")
    func tokenInAnyHeaderWithheld() {
        let headers: [(name: String, value: String)] = [("X-Mine", "Bearer t0k3n"), ("X-Other", "fine"), ("X-Echo", "t0k3n")]
        #expect(names(policy.requestHeaders(headers, secret: "t0k3n")) == ["x-other"])
        #expect(names(policy.requestHeaders(headers, secret: nil)) == ["x-mine", "x-other", "x-echo"])
        #expect(names(policy.requestHeaders(headers, secret: "")) == ["x-mine", "x-other", "x-echo"], "an empty token matches nothing")
    }

    @Test("a service worker's script is refused with not_allowed; other requests, and other workers' values, pass")
    func serviceWorkerRefused() throws {
        for refused: (name: String, value: String) in [("Service-Worker", "script"), ("service-worker", " Script "), ("Sec-Fetch-Dest", "serviceworker")] {
            let error = #expect(throws: VMSessionError.self) { try policy.checkRequest([("Accept", "*/*"), refused]) }
            #expect(error?.code == .notAllowed, "\(refused)")
        }
        try policy.checkRequest([("Sec-Fetch-Dest", "script"), ("Sec-Fetch-Dest", "document"), ("Service-Worker-Navigation-Preload", "true")])
        try policy.checkRequest([])
    }

    @Test("the page gets no guest CORS header, cookie, HSTS or hop-by-hop header; the rest as the guest sent it, sandboxed")
    func responseHeadersFiltered() {
        let kept = policy.responseHeaders(
            [
                ("Access-Control-Allow-Origin", "*"), ("access-control-allow-credentials", "true"), ("Set-Cookie", "a=b"),
                ("Strict-Transport-Security", "max-age=1"), ("Connection", "close, X-Hop"), ("X-Hop", "1"),
                ("Transfer-Encoding", "chunked"), ("Content-Length", "5"), ("Vary", "Origin"), ("Content-Type", "text/plain"),
                ("ETag", "\"1\""), ("X-Guest", "yes"),
            ], base: "/api/v1/sessions/S/guest")
        #expect(names(kept) == ["content-type", "etag", "x-guest", "content-security-policy", "referrer-policy"])
        #expect(kept.first { $0.name == "X-Guest" }?.value == "yes")
    }

    @Test("nothing the guest says may act on the daemon's origin: those headers are dropped and the guest's CSP replaced")
    func originWideHeadersDropped() {
        let dropped: [(name: String, value: String)] = [
            ("Service-Worker-Allowed", "/"), ("Clear-Site-Data", "\"*\""), ("Refresh", "0; url=http://evil.example/"),
            ("Content-Security-Policy", "default-src *"), ("Content-Security-Policy-Report-Only", "default-src 'none'; report-uri /r"),
            ("Reporting-Endpoints", "a=\"http://evil.example/\""), ("Report-To", "{}"), ("NEL", "{}"),
            ("Origin-Agent-Cluster", "?1"), ("Accept-CH", "Sec-CH-UA"), ("Critical-CH", "Sec-CH-UA"), ("Set-Login", "logged-in"),
            ("Speculation-Rules", "\"/rules\""), ("Permissions-Policy", "camera=*"), ("Feature-Policy", "camera *"),
            ("Document-Policy", "x"), ("Cross-Origin-Opener-Policy", "unsafe-none"), ("WWW-Authenticate", "Basic realm=x"),
            ("Authentication-Info", "x"), ("Sec-Session-Registration", "x"), ("Referrer-Policy", "unsafe-url"),
            ("X-Content-Type-Options", "sniff"), ("Set-Cookie2", "a=b"), ("Alt-Svc", "h3=\":443\""),
            ("Link", "</evil.js>; rel=preload; as=script"), ("Link", "</sw.js>; rel=serviceworker"), ("Link", "<//evil.example>; rel=preconnect"),
        ]
        let kept = policy.responseHeaders(dropped + [("Link", "</items?page=2>; rel=\"next\""), ("X-Frame-Options", "DENY")], base: "/b")
        #expect(names(kept) == ["link", "x-frame-options", "content-security-policy", "referrer-policy"])
        #expect(kept.first { $0.name == "Content-Security-Policy" }?.value == GuestProxyPolicy.contentSecurityPolicy)
        #expect(kept.first { $0.name == "Referrer-Policy" }?.value == "no-referrer")
        #expect(GuestProxyPolicy.contentSecurityPolicy.hasPrefix("sandbox "))
        #expect(!GuestProxyPolicy.contentSecurityPolicy.contains("allow-same-origin"), "an opaque origin, never the daemon's")
        #expect(!GuestProxyPolicy.contentSecurityPolicy.contains("allow-top-navigation"))
        #expect(!GuestProxyPolicy.contentSecurityPolicy.contains("escape-sandbox"))
    }

    @Test("a redirect that stays on the guest is rewritten under the proxy, resolved as a browser would; one that leaves it is withheld")
    func locationRewritten() {
        let base = "/api/v1/sessions/S/guest"
        let rewrite = { (value: String, target: String) in
            policy.responseHeaders([("Location", value)], base: base, target: target).first { $0.name == "Location" }?.value
        }
        #expect(rewrite("/login?next=%2F", "/") == base + "/login?next=%2F")
        #expect(rewrite("relative", "/") == base + "/relative")
        #expect(rewrite("c?x=1#f", "/a/b?q") == base + "/a/c?x=1#f")
        #expect(rewrite("?page=2", "/list?page=1") == base + "/list?page=2")
        #expect(rewrite("", "/list?page=1") == base + "/list?page=1")
        #expect(rewrite("./", "/a/b") == base + "/a/")
        // Climbing out of the prefix, plainly or percent-encoded, stops at the guest's root.
        #expect(rewrite("../../../../../close", "/a/b") == base + "/close")
        #expect(rewrite("/../../..", "/") == base + "/")
        #expect(rewrite("/%2e%2E/%2e./.%2e/x", "/") == base + "/x")
        // Off the guest: another scheme or host, scheme-relative in any spelling a browser accepts.
        for away in [
            "//evil.example/x", "https://example.org/", "http://10.0.2.15/x", "/\\evil.example", "\\\\evil.example", "\\/evil.example",
            "/\t/evil.example", " //evil.example", "javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,x", "/é",
        ] {
            #expect(rewrite(away, "/a") == nil, "\(away)")
        }
        // Content-Location the same way.
        let content = policy.responseHeaders([("Content-Location", "https://elsewhere/")], base: base)
        #expect(!names(content).contains("content-location"))
        #expect(policy.responseHeaders([("Content-Location", "x.json")], base: base, target: "/d/").first?.value == base + "/d/x.json")
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
