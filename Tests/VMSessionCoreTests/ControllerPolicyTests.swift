import Testing
import VMSessionCore

/// The idle-aware controller's policy over every combination that matters: settings (controlled, minCap,
/// maxCap, flags), session state, current cap, and idle or active.
@Suite("Controller policy")
struct ControllerPolicyTests {
    static let minCaps = [0, 1, 25, 100]
    static let maxCaps = [1, 50, 100]
    static let flagValues = [0, 1, 2, 3]
    static let caps = [1, 25, 50, 100].map { cap($0) }

    static func cap(_ percent: Int) -> ExecutionCap { (try? ExecutionCap(percent: percent)) ?? .unlimited }

    /// Every valid setting with every state, cap and idleness.
    static var combinations: [(DaemonControl, SessionState, ExecutionCap, Bool)] {
        var all: [(DaemonControl, SessionState, ExecutionCap, Bool)] = []
        for minCap in minCaps {
            for maxCap in maxCaps where maxCap >= minCap {
                for flags in flagValues {
                    let control = DaemonControl(controlled: true, minCap: minCap, maxCap: maxCap, flags: flags)
                    for state in SessionState.allCases {
                        for cap in caps {
                            for idle in [false, true] { all.append((control, state, cap, idle)) }
                        }
                    }
                }
            }
        }
        return all
    }

    @Test("a session that is not controlled is never touched")
    func uncontrolledIsLeftAlone() {
        for (control, state, cap, idle) in Self.combinations {
            var off = control
            off.controlled = false
            #expect(ControllerPolicy.decide(off, state: state, cap: cap, idle: idle) == nil)
        }
    }

    @Test("minCap > 0: cap minCap while active, maxCap while idle, only on a VM with a process, and only if it differs")
    func capsBetweenMinAndMax() {
        for (control, state, cap, idle) in Self.combinations where control.minCap > 0 {
            let step = ControllerPolicy.decide(control, state: state, cap: cap, idle: idle)
            let wanted = Self.cap(idle ? control.maxCap : control.minCap)
            if idle, state == .open, control.flagSet.contains(.autostart) {
                #expect(step == .perform(.start))
            } else if state.hasRunningMachine, cap != wanted {
                #expect(step == .setCap(wanted), "\(control) \(state) \(cap) idle=\(idle)")
            } else {
                #expect(step == nil, "\(control) \(state) \(cap) idle=\(idle)")
            }
        }
    }

    @Test("minCap 0 without DF_SUSPEND: pause a running VM on activity, resume a paused one when idle; caps untouched")
    func pausesAndResumes() {
        for (control, state, cap, idle) in Self.combinations where control.minCap == 0 && !control.flagSet.contains(.suspend) {
            let step = ControllerPolicy.decide(control, state: state, cap: cap, idle: idle)
            switch (idle, state) {
            case (false, .running): #expect(step == .perform(.pause))
            case (true, .paused): #expect(step == .perform(.resume))
            case (true, .open) where control.flagSet.contains(.autostart): #expect(step == .perform(.start))
            default: #expect(step == nil, "\(control) \(state) idle=\(idle)")
            }
        }
    }

    @Test("minCap 0 with DF_SUSPEND: hibernate on activity, restore (start) a saved VM when idle")
    func hibernatesAndRestores() {
        for (control, state, cap, idle) in Self.combinations where control.minCap == 0 && control.flagSet.contains(.suspend) {
            let step = ControllerPolicy.decide(control, state: state, cap: cap, idle: idle)
            switch (idle, state) {
            case (false, .running), (false, .paused): #expect(step == .perform(.hibernate))
            case (true, .saved): #expect(step == .perform(.start))
            case (true, .paused): #expect(step == .perform(.resume))
            case (true, .open) where control.flagSet.contains(.autostart): #expect(step == .perform(.start))
            default: #expect(step == nil, "\(control) \(state) idle=\(idle)")
            }
        }
    }

    @Test("DF_AUTOSTART starts a shut-down VM only while idle, whatever minCap says")
    func autostart() {
        for (control, state, cap, idle) in Self.combinations where state == .open {
            let step = ControllerPolicy.decide(control, state: state, cap: cap, idle: idle)
            #expect((step == .perform(.start)) == (idle && control.flagSet.contains(.autostart)))
        }
    }

    @Test("sessions in a transient state, in error, or closed are left alone")
    func transientAndErrorStatesLeftAlone() {
        for (control, state, cap, idle) in Self.combinations where state.isTransient || state == .error || state == .closed {
            #expect(ControllerPolicy.decide(control, state: state, cap: cap, idle: idle) == nil)
        }
    }

    @Test("every action decided is allowed by the state machine, and applying the steps settles in at most three")
    func stepsAreAllowedAndConverge() throws {
        for (control, state, cap, idle) in Self.combinations {
            var state = state
            var cap = cap
            var steps = 0
            while let step = ControllerPolicy.decide(control, state: state, cap: cap, idle: idle) {
                steps += 1
                try #require(steps <= 3, "no settling for \(control) from \(state) idle=\(idle)")
                switch step {
                case .setCap(let new): cap = new
                case .perform(let action):
                    let transition = try #require(SessionTransition.of(action, from: state), "\(action) not allowed in \(state)")
                    state = transition.onSuccess
                }
            }
        }
    }

    @Test("settings are validated: caps 0–100, maxCap ≥ 1, minCap ≤ maxCap, only known flag bits")
    func validation() {
        #expect(throws: Never.self) { try DaemonControl(controlled: true, minCap: 0, maxCap: 1, flags: 3).validate() }
        #expect(throws: Never.self) { try DaemonControl(controlled: true, minCap: 100, maxCap: 100, flags: 0).validate() }
        for bad in [
            DaemonControl(minCap: -1), DaemonControl(minCap: 101), DaemonControl(minCap: 0, maxCap: 0),
            DaemonControl(maxCap: 101), DaemonControl(minCap: 60, maxCap: 50), DaemonControl(flags: 4), DaemonControl(flags: -1),
        ] {
            #expect(throws: VMSessionError.self, "\(bad)") { try bad.validate() }
        }
    }
}
