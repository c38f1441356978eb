import Testing
import VMSessionCore

@Suite("Web origins")
struct WebOriginTests {
    @Test("origins as browsers send them are accepted and lowercased",
          arguments: [("http://localhost:8080", "http://localhost:8080"), ("HTTPS://Example.ORG", "https://example.org"),
                      ("http://127.0.0.1:3000", "http://127.0.0.1:3000"), ("http://[::1]:9000", "http://[::1]:9000")])
    func accepted(text: String, normalized: String) {
        #expect(WebOrigin(text)?.value == normalized)
    }

    @Test("anything else is refused",
          arguments: ["null", "", "file://", "ftp://example.org", "http://", "http://a/b", "http://user@host", "http://host:0",
                      "http://host:99999", "http://ho st", "http://<script>", "javascript:alert(1)",
                      "http://[f08]", "http://[::1", "http://::1]", "http://a]b", "http://[::1]x", "http://[::1]:99999"])
    func refused(text: String) {
        #expect(WebOrigin(text) == nil)
    }
}
