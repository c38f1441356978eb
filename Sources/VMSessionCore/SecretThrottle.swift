/// Slows down guessing of session secrets: after repeated wrong secrets for one session name within a
/// window, further attempts are refused until a back-off has passed, and the back-off doubles while the
/// guessing goes on. A right secret clears it.
///
/// The plugin blocked after two rejections within 5 s; this keeps that rule and makes it grow.
public struct SecretThrottle<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    public var window: Duration = .seconds(5)
    public var failuresAllowed = 2
    public var firstBackoff: Duration = .seconds(1)
    public var maximumBackoff: Duration = .seconds(60)

    struct Record: Sendable {
        var failures: [Instant] = []
        var lockedUntil: Instant?
        var backoff: Duration
    }

    private var records: [String: Record] = [:]

    public init() {}

    /// Throws `too_many_attempts` (with the seconds to wait) if `name` is locked at `now`.
    public func check(_ name: String, now: Instant) throws(VMSessionError) {
        if let until = records[name]?.lockedUntil, now < until {
            let wait = now.duration(to: until)
            let seconds = Int((Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18).rounded(.up))
            throw VMSessionError(
                .tooManyAttempts, "Too many wrong secrets for this session; try again in \(max(seconds, 1)) s.",
                retryAfterSeconds: max(seconds, 1))
        }
    }

    /// Records a wrong secret.
    public mutating func failed(_ name: String, now: Instant) {
        var record = records[name] ?? Record(backoff: firstBackoff)
        record.failures = record.failures.filter { $0.duration(to: now) < window } + [now]
        if record.failures.count >= failuresAllowed {
            record.lockedUntil = now.advanced(by: record.backoff)
            record.backoff = min(record.backoff * 2, maximumBackoff)
            record.failures = []
        }
        records[name] = record
    }

    /// Records a right secret: the name is free again.
    public mutating func succeeded(_ name: String) {
        records[name] = nil
    }
}
