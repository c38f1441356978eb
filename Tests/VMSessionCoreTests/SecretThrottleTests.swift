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
    let zero = TestInstant(offset: .zero)

    @Test("two wrong secrets within 5 s lock the name for a second, as the plugin blocked after two rejections")
    func twoFailuresLock() throws {
        var throttle = SecretThrottle<TestInstant>()
        try throttle.check("s", now: zero)
        throttle.failed("s", now: zero)
        try throttle.check("s", now: zero.advanced(by: .milliseconds(100)))
        throttle.failed("s", now: zero.advanced(by: .seconds(1)))
        do {
            try throttle.check("s", now: zero.advanced(by: .milliseconds(1500)))
            Issue.record("not locked")
        } catch {
            #expect(error.code == .tooManyAttempts)
            #expect(error.retryAfterSeconds == 1)
        }
        try throttle.check("other", now: zero.advanced(by: .milliseconds(1500)))
        try throttle.check("s", now: zero.advanced(by: .seconds(2)))
    }

    @Test("failures far apart do not lock")
    func slowFailuresDoNotLock() throws {
        var throttle = SecretThrottle<TestInstant>()
        throttle.failed("s", now: zero)
        throttle.failed("s", now: zero.advanced(by: .seconds(6)))
        try throttle.check("s", now: zero.advanced(by: .seconds(6)))
    }

    @Test("the lock doubles while guessing goes on, up to a minute, and a right secret clears it")
    func backoffDoublesAndClears() throws {
        var throttle = SecretThrottle<TestInstant>()
        var now = zero
        var waits: [Int] = []
        for _ in 0..<8 {
            throttle.failed("s", now: now)
            throttle.failed("s", now: now)
            do { try throttle.check("s", now: now) } catch { waits.append(error.retryAfterSeconds ?? 0) }
            now = now.advanced(by: .seconds(61))
        }
        #expect(waits == [1, 2, 4, 8, 16, 32, 60, 60])
        throttle.failed("s", now: now)
        throttle.failed("s", now: now)
        throttle.succeeded("s")
        try throttle.check("s", now: now)
    }
}
