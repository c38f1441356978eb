import Foundation
import Synchronization
import Testing
import VMSessionCore
import VMSessionIdle
import VMSessionTestSupport

/// A source made by the test's factory: answers `reading`, or fails while `reading` is nil.
final class ScriptedSource: IdleSource {
    let kind: IdleSourceKind?
    let reading: Mutex<UInt64?>
    let announcesInput: Bool
    let onChange: @Sendable () -> Void
    var name: String { "scripted \(kind?.rawValue ?? "none")" }

    init(kind: IdleSourceKind, reading: UInt64?, announces: Bool, onChange: @escaping @Sendable () -> Void) {
        self.kind = kind
        self.reading = Mutex(reading)
        self.announcesInput = announces
        self.onChange = onChange
    }

    func idleMilliseconds() async throws(VMSessionError) -> UInt64 {
        guard let value = reading.withLock({ $0 }) else { throw VMSessionError(.unavailable, "\(name) cannot answer") }
        return value
    }
}

/// The session's idle source: chosen from the environment, replaced when the chosen one fails and the
/// session now looks different, and its events passed on. A scripted factory stands in for the real
/// sources (which the end-to-end suites run against Xvfb, sway and mutter).
@Suite("Desktop idle source (choice and re-choice)")
struct DesktopIdleSourceTests {
    final class Made: Sendable {
        let sources = Mutex<[ScriptedSource]>([])
        let waylandReading = Mutex<UInt64?>(nil)
        let xReading = Mutex<UInt64?>(7)
        var factory: DesktopIdleSource.Factory {
            { kind, _, onChange in
                let reading = kind == .wayland ? self.waylandReading.withLock { $0 } : self.xReading.withLock { $0 }
                let source = ScriptedSource(kind: kind, reading: reading, announces: kind == .wayland, onChange: onChange)
                self.sources.withLock { $0.append(source) }
                return source
            }
        }
    }

    @Test("the Wayland socket goes away while X is there: the next reading comes from X, and the status says so")
    func waylandGoneXThere() async throws {
        let scratch = try TemporaryDirectory("vms-idle")
        let directory = scratch.path
        let socket = directory + "/wayland-1"
        FileManager.default.createFile(atPath: socket, contents: nil)
        let made = Made()
        made.waylandReading.withLock { $0 = 1500 }
        let source = DesktopIdleSource(
            variables: ["WAYLAND_DISPLAY": socket, "DISPLAY": "remote:3"], preference: .auto, factory: made.factory)
        #expect(source.kind == .wayland)
        #expect(source.announcesInput)
        #expect(try await source.idleMilliseconds() == 1500)

        // The compositor goes away: its source fails, the socket is gone, X (over TCP) is there.
        try FileManager.default.removeItem(atPath: socket)
        made.sources.withLock { $0.last?.reading.withLock { $0 = nil } }
        #expect(try await source.idleMilliseconds() == 7)
        #expect(source.kind == .xscreensaver)
        #expect(!source.announcesInput)
        #expect(source.reason.contains("DISPLAY=remote:3"))
        #expect(made.sources.withLock { $0.count } == 2)
    }

    @Test("a failing source whose session looks the same is kept (it retries itself), and the error says why it was chosen")
    func sameSessionKeepsSource() async throws {
        let made = Made()
        made.xReading.withLock { $0 = nil }
        let source = DesktopIdleSource(variables: ["DISPLAY": ":4242"], preference: .auto, factory: made.factory)
        #expect(source.kind == .xscreensaver)
        #expect(source.reason.contains("waiting"))
        await #expect(throws: VMSessionError.self) { try await source.idleMilliseconds() }
        await #expect(throws: VMSessionError.self) { try await source.idleMilliseconds() }
        #expect(made.sources.withLock { $0.count } == 1, "no new source while the session is unchanged")
        made.sources.withLock { $0.first?.reading.withLock { $0 = 99 } }
        #expect(try await source.idleMilliseconds() == 99)
    }

    @Test("a source's events come out of the desktop source's one stream")
    func eventsPassedOn() async throws {
        let made = Made()
        made.waylandReading.withLock { $0 = 0 }
        let source = DesktopIdleSource(variables: ["WAYLAND_DISPLAY": "/nonexistent/wayland-0"], preference: .wayland, factory: made.factory)
        var changes = source.changes.makeAsyncIterator()
        made.sources.withLock { $0.first?.onChange() }
        #expect(await changes.next() != nil)
    }

    @Test("idleSource none: no source at all, and reading says detection is off")
    func none() async throws {
        let made = Made()
        let source = DesktopIdleSource(variables: ["DISPLAY": ":0"], preference: .none, factory: made.factory)
        #expect(source.kind == nil)
        #expect(made.sources.withLock { $0.isEmpty })
        await #expect(throws: VMSessionError.self) { try await source.idleMilliseconds() }
    }
}
