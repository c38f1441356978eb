import CXScreenSaver
import Dispatch
import Foundation
import Synchronization
import VMSessionCore

/// Idle time from an X server, told rather than asked where the server can: the SYNC extension's
/// `IDLETIME` counter with two alarms (idle after ``notificationTimeout``, and the next input), as GNOME's
/// idle monitor did on X11. Where the server has no SYNC or no `IDLETIME` (or `x11Idle: poll` is set),
/// ``XScreenSaverIdleSource`` answers instead and the controller polls it; ``X11IdleMethod`` chooses.
///
/// The alarms give the same kind of notifications as a Wayland compositor's `idled`/`resumed`, so
/// ``IdleNotifications`` turns them into a reading in the same way (exact once idle, 0 before) and the
/// controller's logic stays the one for both: every alarm is announced on ``changes``; between them the
/// daemon sleeps. A ``ConnectionThread`` waits on the X connection's descriptor (Xlib blocks); it ends
/// when the server goes away (a new connection is tried on a later reading, at most every
/// ``reopenInterval``) or when the source is released.
public final class X11IdleSource: IdleSource {
    /// How long without input before the server's alarm says idle: the reading's resolution while active.
    public static let notificationTimeout: Duration = .seconds(1)
    public static let reopenInterval: Duration = .milliseconds(500)

    /// `DISPLAY`.
    public let display: String
    public let preference: X11IdleMethod.Preference
    public let changes: AsyncStream<Void>
    public var kind: IdleSourceKind? { .xscreensaver }
    public var announcesInput: Bool { state.withLock { $0.reader != nil } }
    public var name: String {
        state.withLock { state in
            switch state.method {
            case .xsync?: "xsync IDLETIME \(display)"
            case .screenSaver?: "xscreensaver \(display) (\(state.why ?? "polled"))"
            case nil: "x11 \(display)"
            }
        }
    }

    private struct State {
        var notes = IdleNotifications<ContinuousClock.Instant>(timeout: X11IdleSource.notificationTimeout)
        var method: X11IdleMethod?
        var why: String?
        var reader: ConnectionThread?
        var polled: XScreenSaverIdleSource?
        var lastAttempt: ContinuousClock.Instant?
        var lastError: String?
    }

    private let state = Mutex(State())
    private let changed: AsyncStream<Void>.Continuation
    private let onChange: (@Sendable () -> Void)?
    private let queue = DispatchQueue(label: "vmsessiond.x11-connect")

    /// `onChange` is called (besides ``changes``) on every alarm, from the reader thread.
    public init(display: String, preference: X11IdleMethod.Preference = .auto, onChange: (@Sendable () -> Void)? = nil) {
        self.display = display
        self.preference = preference
        self.onChange = onChange
        (changes, changed) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    deinit {
        state.withLock { $0.reader }?.stop()
        changed.finish()
    }

    public func idleMilliseconds() async throws(VMSessionError) -> UInt64 {
        enum Next { case reading(UInt64), polled(XScreenSaverIdleSource), tooSoon(String), connect }
        let clock = ContinuousClock()
        let next: Next = state.withLock { state in
            if state.reader != nil { return .reading(state.notes.idleMilliseconds(at: clock.now)) }
            if let polled = state.polled { return .polled(polled) }
            if let last = state.lastAttempt, clock.now < last + Self.reopenInterval {
                return .tooSoon(state.lastError ?? "connecting")
            }
            state.lastAttempt = clock.now
            return .connect
        }
        switch next {
        case .reading(let milliseconds): return milliseconds
        case .polled(let polled): return try await reading(polled)
        case .tooSoon(let message):
            throw VMSessionError(.unavailable, "The X display \(display) cannot tell idle time: \(message) (retrying every 0.5 s).")
        case .connect: break
        }
        let (display, preference) = (self.display, self.preference)
        let opened: Opened = await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: Self.open(display, preference: preference)) }
        }
        switch opened {
        case .failed(let message):
            state.withLock {
                $0.lastError = message
                $0.method = nil
            }
            throw VMSessionError(.unavailable, "The X display \(display) cannot tell idle time: \(message).")
        case .poll(let why):
            let polled = XScreenSaverIdleSource(display: display)
            state.withLock { state in
                state.polled = polled
                state.method = .screenSaver
                state.why = why
                state.lastError = nil
            }
            return try await reading(polled)
        case .watching(let connection, let idle):
            let pointer = connection.pointer
            let reader = ConnectionThread(
                name: "vmsessiond.x11-idle", descriptor: vms_x11_fd(pointer),
                dispatch: { [weak self] in
                    let fired = vms_x11_dispatch(pointer)
                    guard fired >= 0 else { return false }
                    // The state after every event read: an idle→input pair read at once is "input just now".
                    if fired > 0 { self?.handle(vms_x11_is_idle(pointer) != 0 ? .idled : .resumed) }
                    return true
                },
                finish: { [weak self] stopped in
                    vms_x11_close(pointer)
                    if !stopped { self?.handle(.closed) }
                })
            let now = clock.now
            var notes = IdleNotifications<ContinuousClock.Instant>(timeout: Self.notificationTimeout)
            // Idle already (past the alarm's value): the reading counts from the counter, exactly.
            if idle >= IdleDetector.milliseconds(Self.notificationTimeout) {
                notes.idled(at: now - (.milliseconds(idle) - Self.notificationTimeout))
            }
            state.withLock { state in
                state.reader = reader
                state.method = .xsync
                state.why = nil
                state.notes = notes
                state.lastError = nil
            }
            reader.start()
            return notes.idleMilliseconds(at: now)
        }
    }

    /// Reads the polled fallback; if it fails, it is dropped, so the next reading looks at the server again
    /// (a new server there may have XSync).
    private func reading(_ polled: XScreenSaverIdleSource) async throws(VMSessionError) -> UInt64 {
        do { return try await polled.idleMilliseconds() } catch {
            state.withLock { state in
                if state.polled === polled {
                    state.polled = nil
                    state.method = nil
                    state.lastAttempt = .now
                    state.lastError = error.message
                }
            }
            throw error
        }
    }

    private struct Connection: @unchecked Sendable { let pointer: UnsafeMutablePointer<vms_x11_idle> }
    private enum Opened: Sendable {
        case watching(Connection, idle: UInt64)
        case poll(why: String)
        case failed(String)
    }

    /// Connects, asks what the server offers and, for XSync, sets the alarms. Blocking: on ``queue`` only.
    private static func open(_ display: String, preference: X11IdleMethod.Preference) -> Opened {
        guard let pointer = display.withCString({ vms_x11_open($0, preference == .poll ? 0 : 1) }) else {
            return .failed("it cannot be opened")
        }
        let offer = X11IdleMethod.Offer(
            sync: pointer.pointee.has_sync != 0, idleCounter: pointer.pointee.has_idle_counter != 0,
            screenSaver: pointer.pointee.has_screensaver != 0)
        let (method, why) = X11IdleMethod.choose(offer, preference: preference)
        guard method == .xsync else {
            vms_x11_close(pointer)
            return method == .screenSaver ? .poll(why: why) : .failed(why)
        }
        var idle: UInt64 = 0
        guard vms_x11_watch(pointer, UInt32(IdleDetector.milliseconds(notificationTimeout)), &idle) == 0 else {
            vms_x11_close(pointer)
            return .failed("its XSync alarms could not be set (the connection broke)")
        }
        return .watching(Connection(pointer: pointer), idle: idle)
    }

    /// From the reader thread: an alarm, or the end of the connection.
    private func handle(_ event: IdleEvent) {
        let now = ContinuousClock.now
        state.withLock { state in
            switch event {
            case .idled: state.notes.idled(at: now)
            case .resumed: state.notes.resumed(at: now)
            case .closed:
                state.reader = nil
                state.method = nil
                state.lastAttempt = now
                state.lastError = "the X server closed the connection"
            }
        }
        // Announced outside the lock.
        changed.yield()
        onChange?()
    }
}
