import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import VMSessionCore

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

            let script = try await client.text(.get, "/page.js")
            #expect(script.headers[.contentType] == "text/javascript; charset=utf-8")
            #expect(script.body.contains("sessionStorage"))
        }
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
