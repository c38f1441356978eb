/// Turns readings of "milliseconds since the last input" into the desktop's idle state, and says when
/// to look again. Pure: readings in, state and the next wait out.
///
/// - Active → idle once a reading reaches `idleTime`.
/// - Idle → active when a reading is lower than the one before (there was input since), or when it falls
///   clearly below `idleTime` (`idleTime` was raised). The margin is the hysteresis: a reading near the
///   threshold never flips the state back and forth.
/// - While active, nothing can change before `idleTime − idle` has passed, so the next look is then and
///   no sooner. While idle, input must be noticed within ``idlePollInterval``, so it polls at that pace.
public struct IdleDetector: Sendable, Equatable {
    /// How often to look while idle; bounds the delay from input to the VMs being capped again.
    public static let idlePollInterval: Duration = .milliseconds(150)
    /// How long to wait before looking again after the source could not answer (a display that comes up
    /// after the daemon is then picked up within a second).
    public static let unavailableRetry: Duration = .milliseconds(500)

    public private(set) var isIdle: Bool
    public private(set) var lastReading: UInt64?

    public init(isIdle: Bool = false) {
        self.isIdle = isIdle
    }

    /// Takes a reading (ms since the last input) with the threshold; returns true if the state changed.
    public mutating func observe(idleMilliseconds reading: UInt64, idleTime: Duration) -> Bool {
        let threshold = Self.milliseconds(idleTime)
        let previous = lastReading
        lastReading = reading
        if !isIdle {
            guard reading >= threshold else { return false }
            isIdle = true
            return true
        }
        let inputSince = previous.map { reading < $0 } ?? false
        let margin = min(1000, threshold / 2)
        guard inputSince || reading + margin < threshold else { return false }
        isIdle = false
        return true
    }

    /// Forces a state (a host's own report, or no way to tell); returns true if it changed.
    public mutating func force(idle: Bool) -> Bool {
        lastReading = nil
        defer { isIdle = idle }
        return isIdle != idle
    }

    /// How long to wait before the next reading.
    public func nextCheck(idleTime: Duration) -> Duration {
        if isIdle { return Self.idlePollInterval }
        let threshold = Self.milliseconds(idleTime)
        let remaining = threshold - min(threshold, lastReading ?? 0)
        return .milliseconds(max(remaining, 10))
    }

    public static func milliseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1000 + UInt64(max(0, attoseconds) / 1_000_000_000_000_000)
    }
}
