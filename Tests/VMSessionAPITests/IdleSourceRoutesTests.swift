import Foundation
import HummingbirdTesting
import Synchronization
import Testing
import VMSessionCore
import VMSessionIdle

/// A source that announces input (as a Wayland compositor does): the test sets the reading and rings.
final class AnnouncingIdleSource: IdleSource {
    let milliseconds = Mutex<UInt64>(0)
    let reads = Mutex(0)
    let changes: AsyncStream<Void>
    private let ring: AsyncStream<Void>.Continuation
    var name: String { "announcing" }
    var kind: IdleSourceKind? { .wayland }
    var reason: String { "WAYLAND_DISPLAY=test" }
    var announcesInput: Bool { true }

    init() { (changes, ring) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1)) }

    func idleMilliseconds() async throws(VMSessionError) -> UInt64 {
        reads.withLock { $0 += 1 }
        return milliseconds.withLock { $0 }
    }

    /// An event from the "compositor": the reading changes and the owner is told.
    func event(_ value: UInt64) {
        milliseconds.withLock { $0 = value }
        ring.yield()
    }
}

/// The idle source as the API shows it, and the controller on a source that announces input.
@Suite("Idle source over the API")
struct IdleSourceRoutesTests {
    @Test("GET /api/v1 and GET /api/v1/daemon name the idle source, its kind and why it was chosen; detection is its kind")
    func sourceShown() async throws {
        let source = AnnouncingIdleSource()
        try await APIFixture.run(source: source) { client, _ in
            let info = try await client.call(.get, "/api/v1")
            let shown = try #require(info["idleSource"] as? [String: Any])
            #expect(shown["name"] as? String == "announcing")
            #expect(shown["kind"] as? String == "wayland")
            #expect(shown["reason"] as? String == "WAYLAND_DISPLAY=test")
            let status = try await DaemonRoutesTests.waitFor(client) { $0["idleDetection"] as? String == "wayland" }
            #expect((status["idleSource"] as? [String: Any])?["kind"] as? String == "wayland")
        }
    }

    @Test("with no source, GET /api/v1 has no idleSource")
    func noSource() async throws {
        try await APIFixture.run(source: nil) { client, _ in
            let info = try await client.call(.get, "/api/v1")
            #expect(info["idleSource"] == nil)
        }
    }

    @Test("a source that announces input is not polled while idle: its event alone makes the desktop active")
    func announcedInputWakesController() async throws {
        let source = AnnouncingIdleSource()
        try await APIFixture.run(source: source) { client, fixture in
            #expect(try await client.call(.put, "/api/v1/daemon", token: fixture.adminToken, body: #"{"idleTime":1}"#).status == .ok)
            source.event(5000)
            _ = try await DaemonRoutesTests.waitFor(client) { $0["isSystemIdle"] as? Bool == true }
            // Idle: a polled source would be read every 150 ms; this one is left alone.
            let before = source.reads.withLock { $0 }
            try await Task.sleep(for: .milliseconds(800))
            #expect(source.reads.withLock { $0 } - before <= 1, "read while idle without an event")
            source.event(0)
            _ = try await DaemonRoutesTests.waitFor(client) { $0["isSystemIdle"] as? Bool == false }
        }
    }
}
