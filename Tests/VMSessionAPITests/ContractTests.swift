import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing
import VMSessionSchema

/// `Schema/openapi.yaml` is the contract; these tests keep it and the router from drifting apart. The
/// responses themselves are checked against it by the schemathesis run in `Tests/Contract/`.
@Suite("The OpenAPI contract")
struct ContractTests {
    static func document() throws -> String {
        String(decoding: try VMSessionSchema.openAPIDocument(), as: UTF8.self)
    }

    /// `METHOD /path` for every operation under `paths:`, read from the document's layout (paths at two
    /// spaces, methods at four).
    static func documentedRoutes() throws -> Set<String> {
        var routes = Set<String>()
        var path: String?
        var inPaths = false
        for line in try document().split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" ") && !line.isEmpty { inPaths = line == "paths:" }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
                path = String(line.dropFirst(2).dropLast())
            } else if let path, line.hasPrefix("    "), !line.hasPrefix("     ") {
                let key = line.dropFirst(4).prefix { $0 != ":" }
                if ["get", "put", "post", "delete", "patch"].contains(key) { routes.insert("\(key.uppercased()) \(path)") }
            }
        }
        return routes
    }

    @Test("the document names exactly the routes the router serves")
    func everyRouteDocumented() async throws {
        let documented = try Self.documentedRoutes()
        #expect(documented.count > 20, "the document's paths were read")
        try await APIFixture.run { _, fixture in
            // A catch-all (`/lib/novnc/**`, `/guest/**`) is one path parameter in the document (`/{path}`), which may hold slashes.
            let served = Set(fixture.routes.map { $0.replacingOccurrences(of: "/**", with: "/{path}") })
            #expect(served.subtracting(documented).sorted() == [], "served but not in Schema/openapi.yaml")
            #expect(documented.subtracting(served).sorted() == [], "in Schema/openapi.yaml but not served")
        }
    }

    @Test("GET /api/v1/openapi.yaml serves the document without a token, as application/yaml")
    func servedWithoutToken() async throws {
        let expected = try VMSessionSchema.openAPIDocument()
        #expect(String(decoding: expected, as: UTF8.self).hasPrefix("openapi: 3.1"))
        try await APIFixture.run { client, _ in
            try await client.execute(uri: "/api/v1/openapi.yaml", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/yaml")
                #expect(Data(response.body.readableBytesView) == expected)
            }
        }
    }

    @Test("the document is behind the Origin guard like every route")
    func behindOriginGuard() async throws {
        try await APIFixture.run { client, _ in
            let reply = try await client.call(.get, "/api/v1/openapi.yaml", origin: "http://localhost:8123")
            #expect(reply.status == .forbidden)
            #expect(reply.errorCode == "origin_not_approved")
        }
    }
}
