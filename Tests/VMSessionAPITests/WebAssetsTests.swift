import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import VMSessionCore
@testable import VMSessionAPI

@Suite("vmsession.js and the daemon's page")
struct WebAssetsTests {
    let page = "http://localhost:8123"

    @Test("/vmsession.js is served as JavaScript, and / and /page.js as the daemon's page with a strict policy")
    func servedWithTypes() async throws {
        try await APIFixture.run { client, _ in
            let library = try await client.text(.get, "/vmsession.js")
            #expect(library.status == .ok)
            #expect(library.headers[.contentType] == "text/javascript; charset=utf-8")
            #expect(library.body.contains("VMSession"))
            #expect(library.body.contains("requestSession"))

            let index = try await client.text(.get, "/")
            #expect(index.status == .ok)
            #expect(index.headers[.contentType] == "text/html; charset=utf-8")
            #expect(index.body.contains(#"<script src="/vmsession.js"></script>"#))
            #expect(index.headers[.contentSecurityPolicy]?.contains("frame-ancestors 'none'") == true)

            // Its scripts are the daemon's own files by exact path, never 'self' (which includes guest pages).
            let policy = try #require(index.headers[.contentSecurityPolicy])
            let scripts = try #require(policy.split(separator: ";").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("script-src ") })
            #expect(!scripts.contains("'self'") && scripts.contains("http://localhost/page.js"), "\(scripts)")
            #expect(!scripts.contains("/api/"))
            #expect(index.headers[HTTPField.Name("Cross-Origin-Opener-Policy")!] == "same-origin")
            #expect(index.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer")
            #expect(index.headers[.xContentTypeOptions] == "nosniff")

            let script = try await client.text(.get, "/page.js")
            #expect(script.headers[.contentType] == "text/javascript; charset=utf-8")
            #expect(script.body.contains("sessionStorage"))
        }
    }

    @Test("the page asked for at [::1] moves to localhost (Chromium takes no IPv6 literal in a CSP source); other addresses stay")
    func ipv6PageMovesToLocalhost() {
        #expect(WebController.namedAddress(authority: "[::1]:7011") == "http://localhost:7011/")
        #expect(WebController.namedAddress(authority: "[::1]") == "http://localhost/")
        #expect(WebController.namedAddress(authority: "127.0.0.1:7011") == nil)
        #expect(WebController.namedAddress(authority: "localhost:7011") == nil)
        #expect(WebController.namedAddress(authority: nil) == nil)
    }

    @Test("any origin may load vmsession.js (public code) without being recorded; the page stays for approved origins")
    func libraryIsPublicPageIsNot() async throws {
        try await APIFixture.run { client, fixture in
            let library = try await client.text(.get, "/vmsession.js", origin: page)
            #expect(library.status == .ok)
            #expect(library.headers[.accessControlAllowOrigin] == "*")
            #expect(try fixture.store.allOrigins().isEmpty, "loading the library asks nothing of the user")

            let index = try await client.text(.get, "/", origin: page)
            #expect(index.status == .forbidden)
            #expect(index.body.contains("origin_not_approved"))
            #expect(index.headers[.accessControlAllowOrigin] == nil)
            #expect(try fixture.store.allOrigins().map(\.status) == [.pending])

            // Only GET is public: anything else on the library's path goes through the guard.
            let posted = try await client.text(.post, "/vmsession.js", origin: "http://localhost:9999")
            #expect(posted.status == .forbidden)
        }
    }

    @Test("a static path that does not exist is a JSON 404")
    func unknownStaticPath() async throws {
        try await APIFixture.run { client, _ in
            let reply = try await client.call(.get, "/vmsession.min.js")
            #expect(reply.status == .notFound)
            #expect(reply.errorCode == "not_found")
        }
    }
}

/// A response's status, headers and body as text.
struct TextReply {
    let status: HTTPResponse.Status
    let headers: HTTPFields
    let body: String
}

extension TestClientProtocol {
    func text(_ method: HTTPRequest.Method, _ path: String, origin: String? = nil) async throws -> TextReply {
        var headers = HTTPFields()
        if let origin { headers[.origin] = origin }
        return try await execute(uri: path, method: method, headers: headers) { response in
            TextReply(status: response.status, headers: response.headers, body: String(buffer: response.body))
        }
    }
}
