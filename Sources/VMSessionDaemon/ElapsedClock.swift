/// Any `Clock<Duration>` read as the time elapsed since this value was made.
///
/// Why it exists: an actor that takes its clock at run time (`any Clock<Duration>`, a manual clock in
/// tests) cannot name that clock's `Instant` type to keep instants in its state; this clock's instants
/// are plain durations, so they can be stored and compared whatever clock is underneath.
public struct ElapsedClock: Clock {
    public struct Instant: InstantProtocol, Hashable {
        /// Time since the clock was made.
        public let offset: Duration
        public func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        public func duration(to other: Instant) -> Duration { other.offset - offset }
        public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
        public static func + (lhs: Instant, rhs: Duration) -> Instant { lhs.advanced(by: rhs) }
    }

    private let read: @Sendable () -> Duration
    private let sleeper: @Sendable (Duration, Duration?) async throws -> Void
    public let minimumResolution: Duration

    public init<Base: Clock>(_ base: Base) where Base.Duration == Duration {
        let origin = base.now
        read = { origin.duration(to: base.now) }
        sleeper = { duration, tolerance in try await base.sleep(for: duration, tolerance: tolerance) }
        minimumResolution = base.minimumResolution
    }

    public var now: Instant { Instant(offset: read()) }

    public func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        try await sleeper(now.duration(to: deadline), tolerance)
    }
}
