/// Decides whether a secret may be checked now: the guard in front of scrypt. A value whose events return
/// decisions; its owner (the session manager) does the hashing. Every attempt is reserved *before* it is
/// hashed and released after, so parallel guesses count as much as serial ones.
///
/// Three rules, each against one abuse:
/// - **Guessing is slowed per (name, client).** After `failuresAllowed` wrong secrets within `window` (the
///   plugin blocked after two rejections within 5 s) the pair is locked, and the lock doubles while guessing
///   goes on, up to `maximumBackoff`; a right secret clears it. Attempts still being hashed count as failures
///   until they end, so a burst of 20 concurrent guesses gets one check and 19 refusals, not 20 checks.
/// - **Guessing cannot lock the owner out.** The lock is kept per *client* (the web origin of the page, or
///   `local` for programs without one) rather than per name: a hostile page locks only itself, not the
///   owner's page or `vmsessionctl`. The client is trustworthy because the origin guard only lets approved
///   origins (whose `Origin` a page cannot forge) this far. An owner who proves a prior login (a valid token
///   of the session) passes every lock; only the hashing bound below applies to them.
/// - **scrypt work is bounded.** At most `maximumConcurrentHashes` secrets are hashed at once in the whole
///   daemon, and at most `maximumConcurrentHashesPerClient` for one client, so one client can never take all
///   of them. Excess is refused at once (`too_many_attempts`, Retry-After 1 s), never queued: a queue would
///   grow with the attacker's patience and delay the owner behind it.
public struct SecretThrottle<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    public var window: Duration = .seconds(5)
    public var failuresAllowed = 2
    public var firstBackoff: Duration = .seconds(1)
    public var maximumBackoff: Duration = .seconds(60)
    /// scrypt (16 MiB, tens of milliseconds each) runs at most this many times at once in the daemon.
    public var maximumConcurrentHashes = 4
    /// … and at most this many at once for one client.
    public var maximumConcurrentHashesPerClient = 1
    /// Records kept before those that no longer lock anything are dropped.
    public var recordsKept = 1024

    /// Whose attempts these are: a session name and the client (origin, or `local`) that tries it.
    public struct Key: Hashable, Sendable {
        public let name: String
        public let client: String
        public init(name: String, client: String) {
            self.name = name
            self.client = client
        }
    }

    /// A granted attempt; hand it back to ``settle(_:_:now:)`` exactly once.
    public struct Reservation: Hashable, Sendable {
        public let key: Key
        let counted: Bool
    }

    /// How a reserved attempt ended.
    public enum Outcome: Sendable {
        /// The secret matched: the pair is free again.
        case matched
        /// A wrong secret: it counts towards the lock.
        case wrong
        /// Nothing was checked (a new session's secret was hashed, or hashing failed).
        case unchecked
    }

    struct Record: Sendable {
        var failures: [Instant] = []
        var inFlight = 0
        var lockedUntil: Instant?
        var backoff: Duration
    }

    private var records: [Key: Record] = [:]
    private var hashing = 0
    private var hashingByClient: [String: Int] = [:]

    public init() {}

    /// Reserves one secret check for `key` at `now`, or throws `too_many_attempts` with the seconds to wait.
    /// `proven` says the caller holds a valid token of the session: it passes the guessing lock.
    /// `counted` false reserves hashing work only (a new session's secret), which no lock applies to.
    public mutating func reserve(_ key: Key, proven: Bool = false, counted: Bool = true, now: Instant) throws(VMSessionError)
        -> Reservation
    {
        if counted, !proven, let record = records[key] {
            if let until = record.lockedUntil, now < until {
                let seconds = Self.seconds(now.duration(to: until))
                throw VMSessionError(
                    .tooManyAttempts, "Too many wrong secrets for this session; try again in \(seconds) s.",
                    retryAfterSeconds: seconds)
            }
            let recent = record.failures.filter { $0.duration(to: now) < window }.count
            if recent + record.inFlight >= failuresAllowed {
                throw VMSessionError(
                    .tooManyAttempts, "Other attempts at this session's secret are being checked; try again in 1 s.",
                    retryAfterSeconds: 1)
            }
        }
        guard hashing < maximumConcurrentHashes, hashingByClient[key.client, default: 0] < maximumConcurrentHashesPerClient else {
            throw VMSessionError(
                .tooManyAttempts, "The daemon is checking as many secrets as it allows at once; try again in 1 s.",
                retryAfterSeconds: 1)
        }
        hashing += 1
        hashingByClient[key.client, default: 0] += 1
        let count = counted && !proven
        if count {
            prune(now: now)
            records[key, default: Record(backoff: firstBackoff)].inFlight += 1
        }
        return Reservation(key: key, counted: count)
    }

    /// Ends a reserved attempt with its outcome.
    public mutating func settle(_ reservation: Reservation, _ outcome: Outcome, now: Instant) {
        let client = reservation.key.client
        hashing = max(hashing - 1, 0)
        let remaining = hashingByClient[client, default: 1] - 1
        hashingByClient[client] = remaining > 0 ? remaining : nil
        let key = reservation.key
        if reservation.counted, var record = records[key] {
            record.inFlight = max(record.inFlight - 1, 0)
            records[key] = record
        }
        switch outcome {
        case .matched:
            records[key] = nil
        case .wrong:
            var record = records[key] ?? Record(backoff: firstBackoff)
            record.failures = record.failures.filter { $0.duration(to: now) < window } + [now]
            if record.failures.count >= failuresAllowed {
                record.lockedUntil = now.advanced(by: record.backoff)
                record.backoff = min(record.backoff * 2, maximumBackoff)
                record.failures = []
            }
            records[key] = record
        case .unchecked:
            if let record = records[key], record.inFlight == 0, record.failures.isEmpty, record.lockedUntil == nil {
                records[key] = nil
            }
        }
    }

    /// How many secrets are being hashed now (for tests and status).
    public var hashesInFlight: Int { hashing }

    /// Keeps the table bounded: past `recordsKept`, records that neither lock nor wait are dropped (their
    /// back-off with them, which only ever favours the owner).
    private mutating func prune(now: Instant) {
        guard records.count >= recordsKept else { return }
        records = records.filter { _, record in
            record.inFlight > 0 || (record.lockedUntil.map { now < $0 } ?? false)
                || record.failures.contains { $0.duration(to: now) < window }
        }
    }

    private static func seconds(_ wait: Duration) -> Int {
        let seconds = Int(wait.inSeconds.rounded(.up))
        return max(seconds, 1)
    }
}
