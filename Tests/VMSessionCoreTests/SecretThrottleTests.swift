import Testing
import VMSessionCore

/// A manual instant, so that the throttle is tested without waiting.
struct TestInstant: InstantProtocol {
    var offset: Duration
    func advanced(by duration: Duration) -> TestInstant { TestInstant(offset: offset + duration) }
    func duration(to other: TestInstant) -> Duration { other.offset - offset }
    static func < (lhs: TestInstant, rhs: TestInstant) -> Bool { lhs.offset < rhs.offset }
}

@Suite("Secret throttle")
struct SecretThrottleTests {
    typealias Throttle = SecretThrottle<TestInstant>
    let zero = TestInstant(offset: .zero)
    let attacker = Throttle.Key(name: "s", client: "https://evil.example")
    let owner = Throttle.Key(name: "s", client: "https://owner.example")

    func at(_ milliseconds: Int) -> TestInstant { zero.advanced(by: .milliseconds(milliseconds)) }

    /// One whole attempt: reserve, then finish with `outcome`.
    func attempt(_ throttle: inout Throttle, _ key: Throttle.Key, _ outcome: Throttle.Outcome, at now: TestInstant, proven: Bool = false)
        throws(VMSessionError)
    {
        let reservation = try throttle.reserve(key, proven: proven, now: now)
        throttle.settle(reservation, outcome, now: now)
    }

    func refusal(_ body: () throws(VMSessionError) -> Void) -> VMSessionError? {
        do { try body() } catch { return error }
        return nil
    }

    @Test("two wrong secrets within 5 s lock the pair for a second, as the plugin blocked after two rejections")
    func twoFailuresLock() throws {
        var throttle = Throttle()
        try attempt(&throttle, attacker, .wrong, at: zero)
        try attempt(&throttle, attacker, .wrong, at: at(1000))
        let error = refusal { () throws(VMSessionError) in _ = try throttle.reserve(attacker, now: at(1500)) }
        #expect(error?.code == .tooManyAttempts)
        #expect(error?.retryAfterSeconds == 1)
        _ = try throttle.reserve(Throttle.Key(name: "other", client: attacker.client), now: at(1500))
    }

    @Test("failures far apart do not lock")
    func slowFailuresDoNotLock() throws {
        var throttle = Throttle()
        try attempt(&throttle, attacker, .wrong, at: zero)
        try attempt(&throttle, attacker, .wrong, at: at(6000))
        _ = try throttle.reserve(attacker, now: at(6000))
    }

    @Test("the lock doubles while guessing goes on, up to a minute, and a right secret clears it")
    func backoffDoublesAndClears() throws {
        var throttle = Throttle()
        var now = zero
        var waits: [Int] = []
        for _ in 0..<8 {
            try attempt(&throttle, attacker, .wrong, at: now)
            try attempt(&throttle, attacker, .wrong, at: now)
            if let error = refusal({ () throws(VMSessionError) in _ = try throttle.reserve(attacker, now: now) }) {
                waits.append(error.retryAfterSeconds ?? 0)
            }
            now = now.advanced(by: .seconds(61))
        }
        #expect(waits == [1, 2, 4, 8, 16, 32, 60, 60])
        try attempt(&throttle, attacker, .wrong, at: now)
        try attempt(&throttle, attacker, .matched, at: now)
        try attempt(&throttle, attacker, .wrong, at: now)
        _ = try throttle.reserve(attacker, now: now)
    }

    @Test("attempts are reserved before hashing: 20 concurrent guesses get one check and 19 refusals")
    func parallelGuessesAreCounted() {
        var throttle = Throttle()
        var granted: [Throttle.Reservation] = []
        var refused = 0
        for _ in 0..<20 {
            do { granted.append(try throttle.reserve(attacker, now: zero)) } catch { refused += 1 }
        }
        #expect(granted.count == 1)
        #expect(refused == 19)
        #expect(throttle.hashesInFlight == 1)
    }

    @Test("attempts in flight count as failures even where the per-client hashing bound would allow more")
    func inFlightCountsTowardsTheLock() throws {
        var throttle = Throttle()
        throttle.maximumConcurrentHashesPerClient = 10
        let first = try throttle.reserve(attacker, now: zero)
        _ = try throttle.reserve(attacker, now: zero)
        #expect(refusal { () throws(VMSessionError) in _ = try throttle.reserve(attacker, now: zero) }?.code == .tooManyAttempts)
        throttle.settle(first, .wrong, now: zero)
        // One failure and one still in flight: still two.
        #expect(refusal { () throws(VMSessionError) in _ = try throttle.reserve(attacker, now: zero) }?.code == .tooManyAttempts)
    }

    @Test("hashing is bounded in the daemon and per client, refused at once (Retry-After 1), and freed by finish")
    func hashingBounded() throws {
        var throttle = Throttle()
        throttle.maximumConcurrentHashes = 2
        let a = try throttle.reserve(.init(name: "a", client: "one"), counted: false, now: zero)
        let b = try throttle.reserve(.init(name: "b", client: "two"), counted: false, now: zero)
        let full = refusal { () throws(VMSessionError) in _ = try throttle.reserve(.init(name: "c", client: "three"), counted: false, now: zero) }
        #expect(full?.code == .tooManyAttempts)
        #expect(full?.retryAfterSeconds == 1)
        throttle.settle(a, .unchecked, now: zero)
        throttle.settle(b, .unchecked, now: zero)
        #expect(throttle.hashesInFlight == 0)
        _ = try throttle.reserve(.init(name: "c", client: "three"), counted: false, now: zero)
        // One client holds at most one hash, even for different names.
        _ = try throttle.reserve(.init(name: "x", client: "one"), counted: false, now: zero)
        #expect(refusal { () throws(VMSessionError) in _ = try throttle.reserve(.init(name: "y", client: "one"), counted: false, now: zero) } != nil)
    }

    @Test("an attacker's guesses lock only the attacker: the owner's page and local programs still get in")
    func attackerCannotLockOutOwner() throws {
        var throttle = Throttle()
        var now = zero
        for _ in 0..<50 {
            _ = try? attempt(&throttle, attacker, .wrong, at: now)
            now = now.advanced(by: .milliseconds(100))
        }
        #expect(refusal { () throws(VMSessionError) in _ = try throttle.reserve(attacker, now: now) }?.code == .tooManyAttempts)
        try attempt(&throttle, owner, .matched, at: now)
        try attempt(&throttle, .init(name: "s", client: "local"), .matched, at: now)
    }

    @Test("proof of a prior login (a valid token) passes the lock, but not the hashing bound")
    func provenOwnerPassesTheLock() throws {
        var throttle = Throttle()
        try attempt(&throttle, owner, .wrong, at: zero)
        try attempt(&throttle, owner, .wrong, at: zero)
        #expect(refusal { () throws(VMSessionError) in _ = try throttle.reserve(owner, now: zero) } != nil)
        let proven = try throttle.reserve(owner, proven: true, now: zero)
        #expect(refusal { () throws(VMSessionError) in _ = try throttle.reserve(owner, proven: true, now: zero) } != nil)
        throttle.settle(proven, .matched, now: zero)
        _ = try throttle.reserve(owner, now: zero)
    }

    @Test("the table stays bounded: records that no longer lock are dropped past the limit")
    func recordsBounded() throws {
        var throttle = Throttle()
        throttle.recordsKept = 10
        for index in 0..<100 {
            try attempt(&throttle, .init(name: "n\(index)", client: "c\(index)"), .wrong, at: at(index * 10_000))
        }
        // Had the old records stayed, nothing here would tell; what matters is that a fresh key still works
        // and an old, expired one starts clean.
        try attempt(&throttle, .init(name: "n0", client: "c0"), .wrong, at: at(2_000_000))
        _ = try throttle.reserve(.init(name: "n0", client: "c0"), now: at(2_000_000))
    }
}
