import Testing
import VMSessionCore

/// What the session state machine concludes from VM states that are neither plainly running nor paused,
/// and from shut-off reasons that libvirt keeps after the fact.
@Suite("Observing the VM: guest sleep, shutting down, stale shut-off reasons")
struct MachineObservationTests {
    @Test("a guest that suspends itself or is shutting down keeps a running session running, never paused", arguments: [
        MachineStatus.suspendedByGuest, .shuttingDown,
    ])
    func notPaused(_ status: MachineStatus) {
        var lifecycle = SessionLifecycle(state: .running)
        #expect(lifecycle.observe(status) == nil)
        #expect(lifecycle.state == .running)
        var fromPaused = SessionLifecycle(state: .paused)
        #expect(fromPaused.observe(status)?.to == .running)
    }

    @Test("libvirt's 'no state' changes nothing")
    func unknownChangesNothing() {
        for state in SessionState.allCases {
            var lifecycle = SessionLifecycle(state: state)
            #expect(lifecycle.observe(.unknown) == nil)
        }
    }

    @Test("a crashed or failed shut-off reason is an error only where a process was expected", arguments: [
        MachineStatus.ShutOffReason.crashed, .processFailed,
    ])
    func staleCrashReason(_ reason: MachineStatus.ShutOffReason) {
        let status = MachineStatus.shutOff(reason: reason, hasSavedState: false)
        for state in [SessionState.running, .paused] {
            var lifecycle = SessionLifecycle(state: state)
            #expect(lifecycle.observe(status)?.to == .error, "\(state)")
        }
        var open = SessionLifecycle(state: .open)
        #expect(open.observe(status) == nil, "a VM just redefined by open keeps its old reason; the session stays open")
        var error = SessionLifecycle(state: .error)
        #expect(error.observe(status) == nil)
    }
}
