import Foundation
import Libvirt
import Synchronization
import Testing

/// Connection health on libvirt's in-process test driver: what holds without a far end (the SSH cases are in
/// EndToEndTests.RemoteHostTests).
@Suite("Connection health on test:///default")
struct ConnectionHealthTests {
    /// What the close handler was told.
    final class Recorder: Sendable {
        let reasons = Mutex<[ConnectionCloseReason]>([])
    }

    /// Captured by the handler only, and weakly watched: gone once libvirt released the handler.
    final class Token: Sendable {}

    @Test("a local driver has no keepalive: setKeepAlive says so instead of failing, and the connection is alive")
    func noKeepAliveLocally() throws {
        let connection = try Connection(uri: "test:///default")
        #expect(try connection.setKeepAlive(interval: 1, count: 3) == false)
        #expect(connection.isAlive)
    }

    @Test("one close handler per connection; closing the connection ourselves does not call it and releases it")
    func closeHandlerLifetime() throws {
        let recorder = Recorder()
        weak var watched: Token?
        do {
            let token = Token()
            watched = token
            let connection = try Connection(uri: "test:///default")
            try connection.onClose { reason in
                _ = token
                recorder.reasons.withLock { $0.append(reason) }
            }
            #expect(throws: LibvirtError.self) { try connection.onClose { _ in } }
            #expect(connection.isAlive)
        }
        // libvirt's registration held the handler (and a reference to the connection); deinit removed it first.
        #expect(watched == nil)
        #expect(recorder.reasons.withLock { $0 }.isEmpty)
    }
}
