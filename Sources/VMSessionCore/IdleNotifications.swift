/// Idle time from a source that tells of changes instead of answering "how long since the last input":
/// a Wayland compositor's `idled`/`resumed` events for a timeout the client asked for (`ext-idle-notify-v1`,
/// `org_kde_kwin_idle`), or logind's idle hint with the moment it was set. Pure: events in, readings out.
///
/// After `idled` at time t, the last input was at t − timeout, so the reading is exact (to the event's
/// delivery); before it (since `resumed`, or since the notification was set up) input was less than
/// `timeout` ago, and the reading is 0 (the user counts as active, never as idle too early).
public struct IdleNotifications<Instant: InstantProtocol>: Sendable where Instant.Duration == Swift.Duration {
    public let timeout: Duration
    /// When the source said "idle", nil while the user is active.
    public private(set) var idleSince: Instant?

    public init(timeout: Duration) {
        self.timeout = timeout
    }

    /// The source said the user has been idle for `timeout` (at `now`).
    public mutating func idled(at now: Instant) {
        idleSince = now
    }

    /// The source said there was input (at `now`).
    public mutating func resumed(at now: Instant) {
        idleSince = nil
    }

    /// Milliseconds since the last input, as far as the events tell.
    public func idleMilliseconds(at now: Instant) -> UInt64 {
        guard let idleSince else { return 0 }
        return IdleDetector.milliseconds(idleSince.duration(to: now) + timeout)
    }

    /// logind's form: `IdleHint` and `IdleSinceHintMonotonic` (µs on CLOCK_MONOTONIC) read together with
    /// the monotonic clock's `now` (µs). The hint is set by the desktop after its own idle delay, so the
    /// reading counts from then (an understatement by that delay, never an overstatement). An idle hint
    /// with no moment (0: idle since logind started, no session ever active) counts from boot.
    public static func logindMilliseconds(idleHint: Bool, idleSinceMicroseconds: UInt64, nowMicroseconds: UInt64) -> UInt64 {
        guard idleHint, nowMicroseconds >= idleSinceMicroseconds else { return 0 }
        return (nowMicroseconds - idleSinceMicroseconds) / 1000
    }
}
