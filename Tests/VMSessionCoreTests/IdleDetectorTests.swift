import Testing
import VMSessionCore

/// Readings of idle milliseconds into idle/active, with hysteresis, and when to look again.
@Suite("Idle detector")
struct IdleDetectorTests {
    let idleTime = Duration.seconds(2)

    @Test("the desktop becomes idle when a reading reaches idleTime, not before")
    func becomesIdleAtThreshold() {
        var detector = IdleDetector()
        let changed1 = detector.observe(idleMilliseconds: 1999, idleTime: idleTime)
        #expect(!changed1)
        #expect(!detector.isIdle)
        let changed2 = detector.observe(idleMilliseconds: 2000, idleTime: idleTime)
        #expect(changed2)
        #expect(detector.isIdle)
    }

    @Test("input (a reading lower than the last) makes it active at once")
    func inputMakesActive() {
        var detector = IdleDetector()
        _ = detector.observe(idleMilliseconds: 5000, idleTime: idleTime)
        _ = detector.observe(idleMilliseconds: 5150, idleTime: idleTime)
        let changed3 = detector.observe(idleMilliseconds: 40, idleTime: idleTime)
        #expect(changed3)
        #expect(!detector.isIdle)
    }

    @Test("no flapping at the boundary: readings near idleTime keep the idle state, only input or a clearly higher threshold ends it")
    func hysteresis() {
        var detector = IdleDetector()
        _ = detector.observe(idleMilliseconds: 2000, idleTime: idleTime)
        // idleTime raised a little while idle: the reading is now just under it, and the desktop stays idle.
        let changed4 = detector.observe(idleMilliseconds: 2100, idleTime: .milliseconds(2500))
        #expect(!changed4)
        #expect(detector.isIdle)
        // Raised well above what has passed: active again.
        let changed5 = detector.observe(idleMilliseconds: 2200, idleTime: .seconds(10))
        #expect(changed5)
        #expect(!detector.isIdle)
    }

    @Test("while active it waits until idleness could begin; while idle it polls fast enough to notice input in 250 ms")
    func nextCheck() {
        var detector = IdleDetector()
        _ = detector.observe(idleMilliseconds: 500, idleTime: idleTime)
        #expect(detector.nextCheck(idleTime: idleTime) == .milliseconds(1500))
        _ = detector.observe(idleMilliseconds: 2000, idleTime: idleTime)
        #expect(detector.nextCheck(idleTime: idleTime) == IdleDetector.idlePollInterval)
        #expect(IdleDetector.idlePollInterval < .milliseconds(250))
    }

    @Test("forcing a state reports whether it changed")
    func force() {
        var detector = IdleDetector()
        let changed6 = detector.force(idle: true)
        #expect(changed6)
        let changed7 = detector.force(idle: true)
        #expect(!changed7)
        let changed8 = detector.force(idle: false)
        #expect(changed8)
    }
}
