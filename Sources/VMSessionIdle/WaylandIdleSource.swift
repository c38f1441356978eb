import CWaylandIdle
import Dispatch
import Foundation
import Synchronization
import VMSessionCore

/// Idle time from a Wayland compositor's idle notifications: `ext-idle-notify-v1`, or the older
/// `org_kde_kwin_idle` where that is what the compositor offers (sway 1.7, KWin).
///
/// The protocols do not answer "how long since the last input"; they send `idled` after
/// ``notificationTimeout`` without input and `resumed` on the next input. ``IdleNotifications`` turns
/// those events into an honest reading (exact once idle, 0 while input is more recent than the timeout),
/// and every event is announced on ``changes``, so the controller reacts to input as it comes without
/// polling. One ``ConnectionThread`` per connection waits on the compositor's socket (libwayland blocks); it ends when
/// the compositor goes away (a new connection is tried on a later reading, at most every
/// ``reopenInterval``) or when the source is released.
public final class WaylandIdleSource: IdleSource {
    /// How long without input before the compositor says `idled`: the reading's resolution while active.
    public static let notificationTimeout: Duration = .seconds(1)
    public static let reopenInterval: Duration = .milliseconds(500)

    /// `WAYLAND_DISPLAY`: a socket name under `XDG_RUNTIME_DIR`, or an absolute path.
    public let display: String
    public let changes: AsyncStream<Void>
    public var kind: IdleSourceKind? { .wayland }
    public var announcesInput: Bool { true }
    public var name: String {
        "wayland \(state.withLock { $0.protocolName } ?? "idle-notify") \(display)"
    }

    private struct State {
        var notes = IdleNotifications<ContinuousClock.Instant>(timeout: WaylandIdleSource.notificationTimeout)
        var reader: ConnectionThread?
        var protocolName: String?
        var lastAttempt: ContinuousClock.Instant?
        var lastError: String?
    }

    private let state = Mutex(State())
    private let changed: AsyncStream<Void>.Continuation
    private let onChange: (@Sendable () -> Void)?
    private let queue = DispatchQueue(label: "vmsessiond.wayland-connect")

    /// `onChange` is called (besides ``changes``) on every event, from the reader thread.
    public init(display: String, onChange: (@Sendable () -> Void)? = nil) {
        self.display = display
        self.onChange = onChange
        (changes, changed) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    deinit {
        state.withLock { $0.reader }?.stop()
        changed.finish()
    }

    public func idleMilliseconds() async throws(VMSessionError) -> UInt64 {
        enum Next { case reading(UInt64), tooSoon(String), connect }
        let clock = ContinuousClock()
        let next: Next = state.withLock { state in
            if state.reader != nil { return .reading(state.notes.idleMilliseconds(at: clock.now)) }
            if let last = state.lastAttempt, clock.now < last + Self.reopenInterval {
                return .tooSoon(state.lastError ?? "connecting")
            }
            state.lastAttempt = clock.now
            return .connect
        }
        switch next {
        case .reading(let milliseconds): return milliseconds
        case .tooSoon(let message):
            throw VMSessionError(.unavailable, "Wayland idle notifications from \(display) are not available: \(message) (retrying every 0.5 s).")
        case .connect: break
        }
        let display = self.display
        let opened: Result<Handle, VMSessionError> = await withCheckedContinuation { continuation in
            queue.async {
                var message = [CChar](repeating: 0, count: 512)
                let timeout = UInt32(IdleDetector.milliseconds(Self.notificationTimeout))
                if let pointer = vms_wl_idle_open(display, timeout, &message, message.count) {
                    continuation.resume(returning: .success(Handle(pointer: pointer)))
                } else {
                    let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                    continuation.resume(returning: .failure(VMSessionError(.unavailable, text)))
                }
            }
        }
        switch opened {
        case .failure(let error):
            state.withLock { $0.lastError = error.message }
            throw VMSessionError(.unavailable, "Wayland idle notifications from \(display) are not available: \(error.message).")
        case .success(let handle):
            let protocolName = String(cString: vms_wl_idle_protocol(handle.pointer))
            let pointer = handle.pointer
            let reader = ConnectionThread(
                name: "vmsessiond.wayland-idle", descriptor: vms_wl_idle_fd(pointer),
                dispatch: { [weak self] in
                    let handled = vms_wl_idle_dispatch(pointer)
                    guard handled >= 0 else { return false }
                    // The state after all events read: an idled→resumed pair read at once is "input just now".
                    if handled > 0 { self?.handle(vms_wl_idle_is_idle(pointer) != 0 ? .idled : .resumed) }
                    return true
                },
                finish: { [weak self] stopped in
                    vms_wl_idle_close(pointer)
                    if !stopped { self?.handle(.closed) }
                })
            state.withLock { state in
                state.reader = reader
                state.protocolName = protocolName
                state.notes = IdleNotifications(timeout: Self.notificationTimeout)
                state.lastError = nil
            }
            reader.start()
            return 0
        }
    }

    /// The connection as the reader thread gets it from the connecting queue.
    private struct Handle: @unchecked Sendable { let pointer: OpaquePointer }

    /// From the reader thread: an event, or the end of the connection.
    private func handle(_ event: IdleEvent) {
        let now = ContinuousClock.now
        state.withLock { state in
            switch event {
            case .idled: state.notes.idled(at: now)
            case .resumed: state.notes.resumed(at: now)
            case .closed:
                state.reader = nil
                state.lastAttempt = now
                state.lastError = "the compositor closed the connection"
            }
        }
        // Announced outside the lock.
        changed.yield()
        onChange?()
    }
}
