import Testing
import VMSessionCore

/// Which way an X server's idle time is read: XSync's IDLETIME alarms where the server has them, the
/// polled screen saver extension where it does not (or when configured), and a reason that says which
/// part was missing.
@Suite("X11 idle method")
struct X11IdleMethodTests {
    typealias Offer = X11IdleMethod.Offer

    @Test("a server with SYNC and its IDLETIME counter is watched through alarms")
    func syncWithCounter() {
        let (method, reason) = X11IdleMethod.choose(Offer(sync: true, idleCounter: true, screenSaver: true))
        #expect(method == .xsync)
        #expect(reason.contains("IDLETIME"))
        #expect(X11IdleMethod.choose(Offer(sync: true, idleCounter: true, screenSaver: false)).method == .xsync)
    }

    @Test("without SYNC, or with SYNC but no IDLETIME counter, the screen saver extension is polled, and the reason names what was missing")
    func fallback() {
        let noSync = X11IdleMethod.choose(Offer(sync: false, idleCounter: false, screenSaver: true))
        #expect(noSync.method == .screenSaver)
        #expect(noSync.reason.contains("no SYNC extension"))
        let noCounter = X11IdleMethod.choose(Offer(sync: true, idleCounter: false, screenSaver: true))
        #expect(noCounter.method == .screenSaver)
        #expect(noCounter.reason.contains("no IDLETIME counter"))
    }

    @Test("x11Idle: poll polls even a server that has XSync")
    func configuredPoll() {
        let (method, reason) = X11IdleMethod.choose(Offer(sync: true, idleCounter: true, screenSaver: true), preference: .poll)
        #expect(method == .screenSaver)
        #expect(reason.contains("x11Idle: poll"))
    }

    @Test("a server with neither way gives no method, and says that both are missing")
    func neither() {
        let (method, reason) = X11IdleMethod.choose(Offer(sync: false, idleCounter: false, screenSaver: false))
        #expect(method == nil)
        #expect(reason.contains("no SYNC") && reason.contains("MIT-SCREEN-SAVER"))
        #expect(X11IdleMethod.choose(Offer(sync: true, idleCounter: true, screenSaver: false), preference: .poll).method == nil)
    }
}
