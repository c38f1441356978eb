import Foundation
import Logging
import Testing
import VMSessionCore
@testable import VMSessionDaemon
import VMSessionTestSupport

/// What the idle controller does when a step fails: a passing failure is tried again, a step the daemon
/// cannot take here (no cap mechanism) is not tried again while the daemon runs.
@Suite("Idle controller retries")
struct IdleControllerRetryTests {
    /// A running, controlled session whose idle step is a cap of 50 % (no idle source: the desktop counts as idle).
    static func controlled(_ fixture: SessionManagerRaceTests.Fixture) async throws -> (SessionManager, IdleController, SessionID) {
        let (manager, id) = try await fixture.runningSession()
        _ = try await manager.updateDaemonControl(on: id, controlled: true, minCap: 10, maxCap: 50, flags: nil)
        let controller = try IdleController(
            manager: manager, events: fixture.events, store: fixture.store, source: nil, noSourceReason: "test",
            idleTime: 30, retryAfterFailure: .zero, logger: Logger(label: "test"))
        return (manager, controller, id)
    }

    @Test("a cap the daemon cannot apply here (not_supported) is tried once, not every round")
    func unsupportedStepIsNotRetried() async throws {
        let fixture = try SessionManagerRaceTests.Fixture()
        let (_, controller, _) = try await Self.controlled(fixture)
        await fixture.hypervisor.failNext(.setExecutionCap, with: VMSessionError(.notSupported, "no cap mechanism"))
        _ = await controller.tick()
        _ = await controller.tick()
        _ = await controller.tick()
        #expect(await fixture.hypervisor.callCount(.setExecutionCap) == 1)
    }

    @Test("a step that failed for a passing reason is tried again once its delay is over")
    func passingFailureIsRetried() async throws {
        let fixture = try SessionManagerRaceTests.Fixture()
        let (manager, controller, id) = try await Self.controlled(fixture)
        await fixture.hypervisor.failNext(.setExecutionCap, with: VMSessionError(.controlFailed, "libvirt hiccup"))
        _ = await controller.tick()
        _ = await controller.tick()
        #expect(await fixture.hypervisor.callCount(.setExecutionCap) == 2)
        #expect(try await manager.session(id).executionCap == (try ExecutionCap(percent: 50)))
    }
}
