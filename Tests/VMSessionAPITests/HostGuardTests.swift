import Testing
@testable import VMSessionAPI

@Suite("Host guard")
struct HostGuardTests {
    @Test("loopback names pass", arguments: ["localhost", "localhost:7011", "127.0.0.1", "127.0.0.1:7011", "127.1.2.3:80", "[::1]", "[::1]:7011", "LOCALHOST:7011"])
    func loopbackPasses(host: String) {
        #expect(HostGuard<BasicTestContext>.isLoopback(authority: host))
    }

    @Test(
        "anything else is refused",
        arguments: ["evil.example", "evil.example:7011", "127.0.0.1.evil.example", "localhost.evil.example", "10.0.0.1",
                    "0.0.0.0:7011", "[::2]:7011", "127.0.0.1:99999", "127.0.0.1:", "[::1]x", "", "127.0.0.256"])
    func othersRefused(host: String) {
        #expect(!HostGuard<BasicTestContext>.isLoopback(authority: host))
    }
}

typealias BasicTestContext = Hummingbird.BasicRequestContext
import Hummingbird
