import Logging
import VMSessionCore

/// How long each step of a start took: warm starts from a template and restores are made of steps (store
/// writes, the disk's overlay, the seed, the guest's network, the save image's header, libvirt's restore)
/// whose costs shift with the machine's load, so each start says in the debug log where its time went
/// (issue #21), instead of a benchmark guessing it from outside. Steps that run side by side are each timed
/// on their own, and the whole is timed too.
struct StepTimes: Sendable {
    private let clock = ContinuousClock()
    private let began: ContinuousClock.Instant
    private var last: ContinuousClock.Instant
    private(set) var steps: [(name: String, duration: Duration)] = []

    init() {
        began = clock.now
        last = began
    }

    /// Records `name` as taking the time since the previous step (or the start).
    mutating func lap(_ name: String) {
        let now = clock.now
        steps.append((name, last.duration(to: now)))
        last = now
    }

    /// Records a step timed elsewhere (one that ran beside others); the next ``lap(_:)`` still counts from
    /// the previous one.
    mutating func record(_ name: String, _ duration: Duration) {
        steps.append((name, duration))
    }

    /// Runs `body` and returns how long it took, or its error: for steps that run side by side (`async let`
    /// keeps no typed error).
    static func timed(_ body: () async throws(VMSessionError) -> Void) async -> Result<Duration, VMSessionError> {
        let clock = ContinuousClock()
        let start = clock.now
        do {
            try await body()
            return .success(start.duration(to: clock.now))
        } catch {
            return .failure(error)
        }
    }

    /// Each step and the total, in milliseconds, after `extra`, for a log line's metadata.
    func metadata(_ extra: Logger.Metadata) -> Logger.Metadata {
        var out = extra
        for step in steps { out[step.name + "Ms"] = "\(Self.milliseconds(step.duration))" }
        out["totalMs"] = "\(Self.milliseconds(began.duration(to: clock.now)))"
        return out
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }
}
