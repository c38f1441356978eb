import Foundation
import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
import Testing
import VMSessionCore
@testable import VMSessionDaemon
import VMSessionHypervisor
import VMSessionStore
import VMSessionTestSupport

/// Races and interruptions in the session manager, made deterministic with the scripted hypervisor
/// (gates hold an action while the test changes the VM) and a manual clock.
@Suite("Session manager races, shutdown and interrupted runs")
struct SessionManagerRaceTests {
    /// A manager over an in-memory store and a scripted hypervisor, with an appliance of empty files.
    final class Fixture: Sendable {
        let scratch: TemporaryDirectory
        var directory: String { scratch.path }
        let store: SessionStore
        let events: EventHub
        let hypervisor: ScriptedHypervisor

        init(machines: [SessionID: MachineStatus] = [:]) throws {
            scratch = try TemporaryDirectory("vms-race")
            try TemporaryDirectory.makeStandInAppliance(in: scratch.path)
            store = try SessionStore.inMemory()
            events = EventHub(store: store)
            hypervisor = ScriptedHypervisor(machines: machines)
        }

        func manager(
            configuration: SessionManager.Configuration = .init(stopGrace: .seconds(1)), clock: any Clock<Duration> = ContinuousClock()
        ) -> SessionManager {
            SessionManager(
                store: store, events: events, hypervisor: hypervisor,
                images: ImageStore(
                    store: store, catalog: ImageCatalog(applianceDirectory: directory), directory: directory + "/images",
                    downloader: ImageDownloader(logger: Logger(label: "test")), logger: Logger(label: "test")),
                configuration: configuration, clock: clock, logger: Logger(label: "test"))
        }

        /// Stores a session in `state`, opened with the appliance.
        func session(_ state: SessionState, pending: SessionAction? = nil, egress: EgressPolicy? = nil) throws -> SessionID {
            let now = Date()
            var session = Session(id: SessionID(), name: "s-\(UUID().uuidString.prefix(6))", state: state, createdAt: now, updatedAt: now)
            session.requirements = Requirements(cpus: 1, memory: 128, disk: 64, version: "appliance")
            session.egress = egress
            let stored = StoredSession(
                session: session, secret: SecretDigest(kdf: "scrypt:1024:8:1", salt: [1], hash: [2]), pendingAction: pending)
            _ = try store.createSession(stored, tokenHash: Array(UUID().uuidString.utf8), event: (.sessionCreated, "{}"))
            return session.id
        }

        /// A session whose VM runs, and a manager that has loaded it.
        func runningSession() async throws -> (SessionManager, SessionID) {
            let id = try session(.running)
            await hypervisor.set(id, to: .running, announce: false)
            let manager = manager()
            try await manager.reconcile()
            return (manager, id)
        }
    }

    /// Runs the manager's service while `body` runs, and stops it after.
    static func running<T: Sendable>(_ manager: SessionManager, _ body: () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await manager.run() }
            let result = try await body()
            group.cancelAll()
            return result
        }
    }

    /// Waits for the operation's end on the session's live events (subscribed before the action began).
    static func end(of operation: OperationID, in stream: AsyncStream<SessionEvent>) async -> SessionEvent? {
        for await event in stream where event.kind == .operationCompleted || event.kind == .operationFailed {
            if event.payload.contains(operation.description) { return event }
        }
        return nil
    }

    // MARK: Item 9

    @Test("a VM that dies while a reset runs is seen when the reset ends: the session does not stay running")
    func changeDuringResetIsNotDropped() async throws {
        let fixture = try Fixture()
        let (manager, id) = try await fixture.runningSession()
        let gate = await fixture.hypervisor.hold(.reset)
        async let reset = manager.perform(.reset, on: id)
        await gate.reached()
        // The guest dies while the reset is still under way, and its lifecycle event arrives now.
        await fixture.hypervisor.set(id, to: .shutOff(reason: .crashed, hasSavedState: false), announce: false)
        await manager.machineChanged(id)
        gate.open()
        _ = try await reset
        let session = try await manager.session(id)
        #expect(session.state == .error, "a guest that died during the reset is not left running")
        #expect(session.lastError?.contains("crashed") == true)
    }

    @Test("a guest that dies while its start is under way leaves the session in error, not running")
    func deathDuringStartIsNotDropped() async throws {
        let fixture = try Fixture()
        let id = try fixture.session(.open)
        await fixture.hypervisor.set(id, to: .shutOff(reason: .neverStarted, hasSavedState: false), announce: false)
        let manager = fixture.manager(configuration: .init())
        try await manager.reconcile()
        let stream = fixture.events.subscribe(to: id)
        try await Self.running(manager) {
            let gate = await fixture.hypervisor.hold(.start)
            let receipt = try await manager.perform(.start, on: id, input: .start(userData: nil, parameters: [:]))
            await gate.reached()
            await fixture.hypervisor.set(id, to: .shutOff(reason: .processFailed, hasSavedState: false))
            gate.open()
            _ = await Self.end(of: receipt.operation.id, in: stream)
            // The second look follows the operation's end in the same task; the deadline only keeps a
            // regression from hanging the suite (before the fix no such event ever came).
            let reached = await withTaskGroup(of: Bool.self) { group in
                group.addTask {
                    for await event in stream where event.kind == .stateChanged {
                        let state = try? JSONDecoder().decode(SessionEvent.StateChanged.self, from: Data(event.payload.utf8)).state
                        if state == .error { return true }
                    }
                    return false
                }
                group.addTask {
                    try? await Task.sleep(for: .seconds(20))
                    return false
                }
                let first = await group.next() ?? false
                group.cancelAll()
                return first
            }
            #expect(reached, "the session moved to error after the start ended")
        }
        #expect(try await manager.session(id).state == .error)
    }

    @Test("graceful shutdown leaves an operation in flight pending, and the next start settles it from the VM")
    func shutdownLeavesOperationsForReconciliation() async throws {
        let fixture = try Fixture()
        let id = try fixture.session(.open)
        await fixture.hypervisor.set(id, to: .shutOff(reason: .neverStarted, hasSavedState: false), announce: false)
        let manager = fixture.manager(configuration: .init(egress: { _ in .open }))
        try await manager.reconcile()
        let gate = await fixture.hypervisor.hold(.start)
        let operation: OperationID = try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await manager.run() }
                let receipt = try await manager.perform(.start, on: id, input: .start(userData: nil, parameters: [:]))
                await gate.reached()
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
                return receipt.operation.id
            }
        }
        // Nothing was recorded as failed: the store still says the start is under way.
        let stored = try #require(try fixture.store.session(id))
        #expect(stored.session.state == .starting)
        #expect(stored.pendingAction == .start)
        #expect(stored.session.egress == .open, "the network the VM was defined with is kept")
        #expect(try fixture.store.operation(operation)?.status == .running)
        #expect(try fixture.store.events(for: id, after: 0).allSatisfy { $0.kind != .operationFailed && $0.kind != .error })

        // The VM did boot: the next daemon finds it running and completes the operation.
        let next = fixture.manager()
        try await next.reconcile()
        #expect(try await next.session(id).state == .running)
        #expect(try fixture.store.operation(operation)?.status == .succeeded)
    }

    @Test("a pause stores nothing before libvirt is asked, and a daemon killed after libvirt paused the VM finds it paused")
    func pauseIsStoredWithItsEndAndAKillDuringItIsReadBackFromTheVM() async throws {
        let fixture = try Fixture()
        let (manager, id) = try await fixture.runningSession()
        let before = try fixture.store.events(for: id, after: 0).count
        let gate = await fixture.hypervisor.hold(.pause)
        let pause = Task { try await manager.perform(.pause, on: id) }
        await gate.reached()
        // libvirt has paused the VM; the daemon has not stored anything of the pause yet.
        let stored = try #require(try fixture.store.session(id))
        #expect(stored.session.state == .running && stored.pendingAction == nil && stored.session.operationID == nil)
        #expect(try fixture.store.events(for: id, after: 0).count == before, "no event is stored before the pause ends")
        let running = try #require(try await manager.session(id).operationID, "readers still see the operation in flight")
        #expect(try await manager.operation(running).status == .running)

        // Killed here (the pause's task is dropped with its daemon): the next daemon reads the VM.
        let next = fixture.manager()
        try await next.reconcile()
        #expect(try await next.session(id).state == .paused)
        #expect(try fixture.store.session(id)?.session.state == .paused)
        gate.open()
        _ = try? await pause.value
    }

    @Test("a pause that ends stores its operation and its start's and end's events in order, in one go")
    func pauseStoresItsOperationAndEventsWithItsEnd() async throws {
        let fixture = try Fixture()
        let (manager, id) = try await fixture.runningSession()
        let before = try fixture.store.events(for: id, after: 0).last?.id ?? 0
        let receipt = try await manager.perform(.pause, on: id)
        #expect(receipt.session.state == .paused)
        #expect(try fixture.store.operation(receipt.operation.id)?.status == .succeeded)
        let kinds = try fixture.store.events(for: id, after: before).map(\.kind)
        #expect(kinds == [.operationStarted, .stateChanged, .operationCompleted])

        // A failed resume leaves the session paused and stores its operation as failed, with its error.
        await fixture.hypervisor.failNext(.resume, with: VMSessionError(.controlFailed, "qemu said no"))
        let last = try fixture.store.events(for: id, after: 0).last?.id ?? 0
        await #expect(throws: VMSessionError.self) { try await manager.perform(.resume, on: id) }
        #expect(try await manager.session(id).state == .paused)
        #expect(try fixture.store.events(for: id, after: last).map(\.kind) == [.operationStarted, .operationFailed, .error])
    }

    @Test("a start gives the VM the egress policy of the session's client, and the session shows it")
    func startUsesTheClientsEgress() async throws {
        let fixture = try Fixture()
        let id = try fixture.session(.open)
        await fixture.hypervisor.set(id, to: .shutOff(reason: .neverStarted, hasSavedState: false), announce: false)
        let asked = Mutex<[String]>([])
        let manager = fixture.manager(configuration: .init(egress: { client in
            asked.withLock { $0.append(client) }
            return .none
        }))
        try await manager.reconcile()
        let stream = fixture.events.subscribe(to: id)
        let end = try await Self.running(manager) {
            let receipt = try await manager.perform(.start, on: id, input: .start(userData: nil, parameters: [:]))
            return await Self.end(of: receipt.operation.id, in: stream)
        }
        #expect(end?.kind == .operationCompleted)
        #expect(asked.withLock { $0 } == ["local"], "the policy is asked for the session's own client")
        #expect(await fixture.hypervisor.specs[id]?.egress == EgressPolicy.none, "the VM is defined with it")
        #expect(try await manager.session(id).egress == EgressPolicy.none)
        #expect(try fixture.store.session(id)?.session.egress == EgressPolicy.none, "and it is stored")
    }

    @Test("a guest that suspends itself or is shutting down is not shown as paused, and the controller leaves it be")
    func guestSuspendIsNotPause() async throws {
        let fixture = try Fixture()
        let (manager, id) = try await fixture.runningSession()
        _ = try await manager.updateDaemonControl(on: id, controlled: true, minCap: 0, maxCap: 100, flags: 0)
        for status in [MachineStatus.suspendedByGuest, .shuttingDown] {
            await fixture.hypervisor.set(id, to: status, announce: false)
            await manager.machineChanged(id)
            #expect(try await manager.session(id).state == .running, "\(status)")
            // Idle: the controller would resume a paused session; this one is not paused.
            let outcome = await manager.applyController(idle: true, to: id)
            #expect(outcome == nil || outcome?.step != .perform(.resume))
            #expect(await fixture.hypervisor.callCount(.resume) == 0)
        }
    }

    @Test("the guest's network is forgotten when the session closes")
    func closeForgetsNetwork() async throws {
        let fixture = try Fixture()
        let id = try fixture.session(.saved, egress: .internet)
        await fixture.hypervisor.set(id, to: .shutOff(reason: .saved, hasSavedState: true), announce: false)
        let manager = fixture.manager()
        try await manager.reconcile()
        let stream = fixture.events.subscribe(to: id)
        try await Self.running(manager) {
            let receipt = try await manager.perform(.close, on: id)
            _ = await Self.end(of: receipt.operation.id, in: stream)
        }
        #expect(try await manager.session(id).state == .closed)
        #expect(try await manager.session(id).egress == nil)
        #expect(try fixture.store.session(id)?.session.egress == nil)
    }

    @Test("a wait for an operation wakes when it ends, with the clock standing still, and leaves no event subscription behind")
    func waitForOperationWakesOnItsEnd() async throws {
        let fixture = try Fixture()
        let id = try fixture.session(.open)
        await fixture.hypervisor.set(id, to: .shutOff(reason: .neverStarted, hasSavedState: false), announce: false)
        let clock = ManualClock()
        let manager = fixture.manager(configuration: .init(), clock: clock)
        try await manager.reconcile()
        let gate = await fixture.hypervisor.hold(.start)
        try await Self.running(manager) {
            let hub = await manager.events
            let before = hub.subscriberCount
            let receipt = try await manager.perform(.start, on: id, input: .start(userData: nil, parameters: [:]))
            await gate.reached()
            try await withThrowingTaskGroup(of: SessionOperation.self) { group in
                group.addTask { try await manager.waitForOperation(receipt.operation.id, timeout: .seconds(30)) }
                // The waiter is asleep (its re-check) before the start is let go; time never moves.
                while clock.sleeperCount == 0 { await Task.yield() }
                gate.open()
                let operation = try #require(try await group.next())
                #expect(operation.status == .succeeded)
            }
            #expect(clock.now.offset == .zero, "woken by the end, not by a timer")
            #expect(hub.subscriberCount == before, "the wait's subscription is gone")
        }
    }

    @Test("waiting for an operation ends when the manager's clock passes the timeout, with no real waiting")
    func waitForOperationFollowsTheClock() async throws {
        let fixture = try Fixture()
        let id = try fixture.session(.open)
        await fixture.hypervisor.set(id, to: .shutOff(reason: .neverStarted, hasSavedState: false), announce: false)
        let clock = ManualClock()
        let manager = fixture.manager(configuration: .init(), clock: clock)
        try await manager.reconcile()
        let gate = await fixture.hypervisor.hold(.start)
        try await Self.running(manager) {
            let receipt = try await manager.perform(.start, on: id, input: .start(userData: nil, parameters: [:]))
            await gate.reached()
            final class Outcome: Sendable { let value = Mutex<SessionOperation?>(nil) }
            let done = Outcome()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    let operation = try await manager.waitForOperation(receipt.operation.id, timeout: .seconds(30))
                    done.value.withLock { $0 = operation }
                }
                // Move time on whenever the waiter sleeps, until it gives up.
                while done.value.withLock({ $0 == nil }) {
                    if clock.sleeperCount > 0 { clock.advance(by: .seconds(1)) }
                    await Task.yield()
                }
                try await group.waitForAll()
            }
            #expect(done.value.withLock { $0?.status } == .running, "the wait ended at its timeout, the operation still under way")
            #expect(clock.now.offset >= .seconds(30) && clock.now.offset <= .seconds(31))
            gate.open()
        }
    }

    // MARK: Item 8 (the manager's side; the libvirt side is in the hypervisor and end-to-end tests)

    @Test("a hibernation image left beside a running VM is removed at start-up, so a later stop does not make it saved")
    func staleHibernationImageRemoved() async throws {
        let fixture = try Fixture()
        let id = try fixture.session(.saving, pending: .hibernate)
        await fixture.hypervisor.set(id, to: .running, announce: false)
        await fixture.hypervisor.leaveSavedImage(beside: id)
        let manager = fixture.manager()
        try await manager.reconcile()
        #expect(try await manager.session(id).state == .running)
        let stream = fixture.events.subscribe(to: id)
        try await Self.running(manager) {
            let receipt = try await manager.perform(.stop, on: id)
            _ = await Self.end(of: receipt.operation.id, in: stream)
        }
        #expect(try await manager.session(id).state == .open, "old memory is not restored over the newer disk")
    }

    @Test("after a close cut short by a kill, a new open is not undone by the VM's stale 'crashed' shut-off reason")
    func openAfterInterruptedCloseStaysOpen() async throws {
        let fixture = try Fixture()
        // The kill left the VM defined and shut off with the reason of its killed process.
        let id = try fixture.session(.closing, pending: .close)
        await fixture.hypervisor.set(id, to: .shutOff(reason: .crashed, hasSavedState: false), announce: false)
        let manager = fixture.manager()
        try await manager.reconcile()
        #expect(try await manager.session(id).state == .error)
        let stream = fixture.events.subscribe(to: id)
        try await Self.running(manager) {
            let receipt = try await manager.perform(.open, on: id, input: .open(Requirements(cpus: 1, memory: 128, disk: 64, version: "appliance")))
            #expect(await Self.end(of: receipt.operation.id, in: stream)?.kind == .operationCompleted)
        }
        // The redefinition's lifecycle event arrives after the open completed.
        await manager.machineChanged(id)
        #expect(try await manager.session(id).state == .open)
    }
}

extension SessionManagerRaceTests {
    @Test("a close cut short after the VM was undefined finishes at start-up: no file of it is left")
    func interruptedCloseFinishesRemoval() async throws {
        let fixture = try Fixture()
        let id = try fixture.session(.closing, pending: .close)
        // The VM is already gone from the hypervisor; its files may not be.
        let manager = fixture.manager()
        try await manager.reconcile()
        #expect(try await manager.session(id).state == .closed)
        #expect(await fixture.hypervisor.callCount(.remove) == 1, "the removal is carried to its end")
    }
}
