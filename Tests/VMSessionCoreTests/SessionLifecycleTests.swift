import Testing
import VMSessionCore

@Suite("Session lifecycle")
struct SessionLifecycleTests {
    @Test("an accepted action moves to its transient state until it completes")
    func acceptedActionMovesThroughTransientState() throws {
        var lifecycle = SessionLifecycle(state: .open)
        let transition = try lifecycle.request(.start)
        #expect(lifecycle.state == .starting)
        #expect(lifecycle.pending == transition)
        let change = lifecycle.complete(succeeded: true, reason: "booted")
        #expect(change == .init(from: .starting, to: .running, reason: "booted"))
        #expect(lifecycle.pending == nil)
    }

    @Test("a failed action lands in the transition's failure state")
    func failedActionLandsInFailureState() throws {
        var lifecycle = SessionLifecycle(state: .closed)
        _ = try lifecycle.request(.open)
        #expect(lifecycle.complete(succeeded: false, reason: "no disk")?.to == .error)

        var paused = SessionLifecycle(state: .running)
        _ = try paused.request(.pause)
        #expect(paused.complete(succeeded: false, reason: "libvirt said no") == nil)
        #expect(paused.state == .running)
    }

    @Test("a second action while one runs is refused with operation_in_progress")
    func secondActionIsRefused() throws {
        var lifecycle = SessionLifecycle(state: .running)
        _ = try lifecycle.request(.pause)
        let before = lifecycle
        #expect(throws: VMSessionError.self) { _ = try lifecycle.request(.stop) }
        do {
            _ = try lifecycle.request(.stop)
        } catch {
            #expect(error.code == .operationInProgress)
        }
        #expect(lifecycle == before)
    }

    @Test("observations are ignored while an action runs")
    func observationsIgnoredWhilePending() throws {
        var lifecycle = SessionLifecycle(state: .open)
        _ = try lifecycle.request(.start)
        #expect(lifecycle.observe(.running) == nil)
        #expect(lifecycle.state == .starting)
    }

    @Test(
        "what the hypervisor reports moves an idle session as it should",
        arguments: [
            (SessionState.running, MachineStatus.shutOff(reason: .guestShutdown, hasSavedState: false), SessionState.open),
            (.running, .shutOff(reason: .crashed, hasSavedState: false), .error),
            (.running, .shutOff(reason: .processFailed, hasSavedState: false), .error),
            (.running, .crashed(reason: "panic"), .error),
            (.running, .paused(reason: "I/O error"), .paused),
            (.paused, .running, .running),
            (.open, .running, .running),
            (.running, .shutOff(reason: .saved, hasSavedState: true), .saved),
            (.running, .absent, .error),
            (.open, .absent, .error),
            (.closed, .absent, .closed),
            (.running, .running, .running),
            (.saved, .shutOff(reason: .saved, hasSavedState: true), .saved),
        ])
    func observationMovesSession(from: SessionState, status: MachineStatus, to: SessionState) {
        var lifecycle = SessionLifecycle(state: from)
        let change = lifecycle.observe(status)
        #expect(lifecycle.state == to)
        #expect((change == nil) == (from == to))
        if let change { #expect(!change.reason.isEmpty) }
    }
}
