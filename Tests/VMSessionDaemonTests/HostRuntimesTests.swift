import Foundation
import Logging
import Synchronization
import Testing
import VMSessionCore
@testable import VMSessionDaemon
import VMSessionHypervisor
import VMSessionStore
import VMSessionTestSupport

/// Sessions over two hosts, each a scripted hypervisor, behind one ``HostRuntimes``: placement by the registry's
/// rule, every call reaching its host's hypervisor, a lost host's calls refused while the other's work, a close on a
/// lost host forgetting the session, and the host's return reconciling its sessions.
@Suite("Host runtimes: sessions on two hosts, a host's loss and return")
struct HostRuntimesTests {
    static let logger = Logger(label: "test.runtimes")

    final class Fixture: Sendable {
        let scratch: TemporaryDirectory
        let store: SessionStore
        let local = ScriptedHypervisor()
        let lab: ScriptedHypervisor
        let runtimes: HostRuntimes
        let registry: HostRegistry
        let labHost: HostRegistry.RemoteHost
        let manager: SessionManager

        /// `labRefusesNetwork`: why the lab gives guests no network (a remote host without passt), or nil.
        init(labRefusesNetwork: String? = nil) async throws {
            lab = ScriptedHypervisor(guestNetworkRefusal: labRefusesNetwork)
            scratch = try TemporaryDirectory("vms-runtimes")
            try TemporaryDirectory.makeStandInAppliance(in: scratch.path)
            let store = try SessionStore.inMemory()
            self.store = store
            let events = EventHub(store: store)
            let runtimes = HostRuntimes(
                local: local, factory: { _, _ throws(VMSessionError) in throw VMSessionError(.internalError, "not used") },
                announce: { ids, kind, payload in
                    _ = try? events.record { try store.append(kind, payload: payload, forEach: ids, at: Date()) }
                }, logger: HostRuntimesTests.logger)
            self.runtimes = runtimes
            let count = Mutex<(@Sendable (String) -> Int)?>(nil)
            let registry = try HostRegistry(
                store: store, localURI: "scripted:///", configured: [], sessionCount: { name in count.withLock { $0 }?(name) ?? 0 },
                logger: HostRuntimesTests.logger)
            self.registry = registry
            _ = try await registry.add(try HostDefinition.validated(name: "lab", uri: "test:///default", labels: [:], maxSessions: nil, source: .admin))
            registry.finish()
            var announced: HostRegistry.RemoteHost?
            for await host in registry.remoteHosts { announced = host }
            labHost = try #require(announced)
            // The local host is small and the lab large: the lab takes ties of session counts.
            registry.measured("local", capacity: HostCapacity(cpus: 2, memory: 2048, freeMemory: 1000), latency: nil)
            registry.measured("lab", generation: labHost.generation, capacity: HostCapacity(cpus: 4, memory: 16384, freeMemory: 8000), latency: nil)
            manager = SessionManager(
                store: store, events: events, hypervisor: runtimes,
                images: ImageStore(
                    store: store, catalog: ImageCatalog(applianceDirectory: scratch.path), directory: scratch.path + "/images",
                    downloader: ImageDownloader(logger: HostRuntimesTests.logger), logger: HostRuntimesTests.logger),
                configuration: .init(
                    stopGrace: .seconds(1),
                    place: { id, requirements, _, _ throws(VMSessionError) in
                        let host = try registry.place(requirements)
                        runtimes.place(id, on: host)
                        return host
                    }),
                logger: HostRuntimesTests.logger)
            count.withLock { [readModel = manager.readModel] in
                $0 = { name in readModel.allSessions().sessions.filter { $0.state != .closed && $0.host == name }.count }
            }
        }

        /// The lab connects: its runtime first, then its link (as the monitor does).
        func labConnects() async {
            await runtimes.attach("lab", hypervisor: lab)
            _ = registry.report(labHost, .connected(at: Date()))
        }

        func labLost(_ reason: String) async {
            let time = Date()
            await runtimes.lost("lab", at: time, reason: reason)
            _ = registry.report(labHost, .lost(at: time, reason: reason))
        }

        /// A closed session, stored as a page would have made it.
        func session() throws -> SessionID {
            let now = Date()
            let stored = StoredSession(
                session: Session(id: SessionID(), name: "s-\(UUID().uuidString.prefix(6))", createdAt: now, updatedAt: now),
                secret: SecretDigest(kdf: "scrypt:1024:8:1", salt: [1], hash: [2]))
            _ = try store.createSession(stored, tokenHash: Array(UUID().uuidString.utf8), event: (.sessionCreated, "{}"))
            return stored.session.id
        }

        /// Runs `action` on `id` and waits for its operation.
        func act(_ action: SessionAction, _ id: SessionID, _ input: SessionManager.ActionInput = .none) async throws -> SessionOperation {
            let receipt = try await manager.perform(action, on: id, input: input)
            return try await manager.waitForOperation(receipt.operation.id, timeout: .seconds(10))
        }

        func kinds(_ id: SessionID) throws -> [SessionEvent.Kind] { try store.events(for: id, after: 0).map(\.kind) }
    }

    static let small = Requirements(cpus: 1, memory: 128, disk: 64, version: "appliance")

    /// Runs the runtimes' and the manager's services while `body` runs.
    static func running(_ fixture: Fixture, _ body: () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await fixture.runtimes.run() }
            group.addTask { try await fixture.manager.run() }
            try await body()
            group.cancelAll()
        }
    }

    /// Polls `condition` (the manager reacts to host changes through its own service) for up to 5 s.
    static func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
        for _ in 0..<500 {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    @Test("a session on a host that gives guests no network is defined without one, and its guest API is 422 not_supported saying why; a local session's is not")
    func hostWithoutGuestNetwork() async throws {
        let why = "Remote host lab cannot give guests a network (egress sandbox and guest API): it lacks passt"
        let fixture = try await Fixture(labRefusesNetwork: why)
        let (a, b) = (try fixture.session(), try fixture.session())
        try await fixture.manager.reconcile()
        await fixture.labConnects()
        try await Self.running(fixture) { () async throws in
            for id in [a, b] {
                #expect(try await fixture.act(.open, id, .open(Self.small)).status == .succeeded)
                #expect(try await fixture.act(.start, id, .start(userData: nil, parameters: [:])).status == .succeeded)
            }
            #expect(try fixture.manager.session(a).host == "lab")
            #expect(try fixture.manager.session(b).host == "local")
            #expect(await fixture.lab.specs[a]?.egress == nil, "the lab's VM is defined without a network")
            #expect(await fixture.local.specs[b]?.egress != nil)
            #expect(try fixture.manager.session(a).egress == nil, "its view claims none")
            let refused = await #expect(throws: VMSessionError.self) { _ = try await fixture.manager.guestAPIRoute(a) }
            #expect(refused?.code == .notSupported && refused?.message == why, "\(String(describing: refused))")
            // The local session has a network; its scripted guest has no API address, which is the running-VM refusal.
            let local = await #expect(throws: VMSessionError.self) { _ = try await fixture.manager.guestAPIRoute(b) }
            #expect(local?.code != .notSupported)
        }
    }

    @Test("sessions are spread by the placement rule, and each action reaches its own host's hypervisor")
    func spreadAndRouted() async throws {
        let fixture = try await Fixture()
        let (a, b, c) = (try fixture.session(), try fixture.session(), try fixture.session())
        try await fixture.manager.reconcile()
        await fixture.labConnects()
        try await Self.running(fixture) {
            for id in [a, b, c] { #expect(try await fixture.act(.open, id, .open(Self.small)).status == .succeeded) }
            // 0/0 sessions: the lab (more free memory); then 1/0: local; then 1/1: the lab again.
            #expect(try fixture.manager.session(a).host == "lab")
            #expect(try fixture.manager.session(b).host == "local")
            #expect(try fixture.manager.session(c).host == "lab")
            #expect(try fixture.store.session(a)?.session.host == "lab", "stored")
            #expect(Set(await fixture.lab.specs.keys) == [a, c])
            #expect(Set(await fixture.local.specs.keys) == [b])
            #expect(fixture.registry.placement().hosts.map(\.sessions) == [2, 1], "counted per host")

            for id in [a, b] { #expect(try await fixture.act(.start, id, .start(userData: nil, parameters: [:])).status == .succeeded) }
            _ = try await fixture.manager.perform(.pause, on: a)
            #expect(await fixture.lab.callCount(.pause) == 1)
            #expect(await fixture.local.callCount(.pause) == 0)
            #expect(await fixture.lab.machines[a] == .paused(reason: "by request"))
            #expect(try await fixture.runtimes.allMachines().keys.sorted { $0.description < $1.description }
                == [a, b, c].sorted { $0.description < $1.description })
        }
    }

    @Test("a lost host's sessions are told and refused with host_unreachable while the other host's work; a close there forgets; the return reconciles and removes the leftover")
    func lossAndReturn() async throws {
        let fixture = try await Fixture()
        let (a, b, c, d) = (try fixture.session(), try fixture.session(), try fixture.session(), try fixture.session())
        try await fixture.manager.reconcile()
        await fixture.labConnects()
        try await Self.running(fixture) {
            for id in [a, b, c] { _ = try await fixture.act(.open, id, .open(Self.small)) }
            for id in [a, b] { _ = try await fixture.act(.start, id, .start(userData: nil, parameters: [:])) }
            #expect(try [a, b, c].map { try fixture.manager.session($0).host } == ["lab", "local", "lab"])

            await fixture.labLost("the connection is closed")
            #expect(try fixture.kinds(a).last == .hostUnreachable)
            #expect(try fixture.kinds(c).last == .hostUnreachable)
            #expect(try !fixture.kinds(b).contains(.hostUnreachable))
            await fixture.labLost("a probe failed")
            #expect(try fixture.kinds(a).filter { $0 == .hostUnreachable }.count == 1, "told once per loss")

            let refused = await #expect(throws: VMSessionError.self) { _ = try await fixture.manager.perform(.pause, on: a) }
            #expect(refused?.code == .hostUnreachable)
            #expect(refused?.message.contains("'lab'") == true && refused?.message.contains("a probe failed") == true)
            #expect(try fixture.manager.session(a).state == .running, "a refused call changes nothing")
            _ = try await fixture.manager.perform(.pause, on: b)
            #expect(try fixture.manager.session(b).state == .paused, "the other host's session keeps working")
            // A new session goes where it can: the lab is not reachable.
            _ = try await fixture.act(.open, d, .open(Self.small))
            #expect(try fixture.manager.session(d).host == "local")

            // Close on the lost host: the session is closed now, its VM still on the lab.
            #expect(try await fixture.act(.close, c).status == .succeeded)
            #expect(try fixture.manager.session(c).state == .closed)
            #expect(await fixture.lab.machines[c] != nil)
            // While the lab was away, a's VM died.
            await fixture.lab.set(a, to: .shutOff(reason: .crashed, hasSavedState: false), announce: false)

            await fixture.labConnects()
            #expect(await fixture.lab.machines[c] == nil, "the forgotten session's VM is removed on return")
            #expect(try fixture.kinds(a).contains(.hostReachable))
            #expect(try !fixture.kinds(c).contains(.hostReachable), "a forgotten session is not told")
            let reconciled = try await Self.eventually { try fixture.manager.session(a).state != .running }
            #expect(reconciled, "reconciled against its VM")
            #expect(try fixture.kinds(a).last == .stateChanged)
        }
    }

    @Test("no host fits: an error names each host's refusal and nothing changes; a draining host takes no session")
    func noHostFits() async throws {
        let fixture = try await Fixture()
        let a = try fixture.session()
        try await fixture.manager.reconcile()
        await fixture.labConnects()
        _ = try await fixture.registry.setDraining("lab", true)
        try await Self.running(fixture) {
            let big = Requirements(cpus: 3, memory: 128, disk: 64, version: "appliance")
            let refused = await #expect(throws: VMSessionError.self) { _ = try await fixture.manager.perform(.open, on: a, input: .open(big)) }
            #expect(refused?.code == .insufficientResources)
            #expect(refused?.message.contains("lab draining") == true)
            #expect(refused?.message.contains("local has 2 CPUs, 3 asked for") == true, "\(refused?.message ?? "")")
            #expect(try fixture.manager.session(a).state == .closed)
            #expect(try fixture.store.session(a)?.session.host == "local")
            #expect(await fixture.lab.specs.isEmpty)
            #expect(await fixture.local.specs.isEmpty)
            _ = try await fixture.act(.open, a, .open(Self.small))
            #expect(try fixture.manager.session(a).host == "local", "the draining lab was passed over though it has more free memory")
        }
    }

    @Test("at start, a session on a host not connected yet is skipped, not stopped, and reconciled when the host connects")
    func startSkipsUnreachable() async throws {
        let fixture = try await Fixture()
        let id = try fixture.session()
        var stored = try #require(try fixture.store.session(id))
        stored.session.state = .running
        stored.session.host = "lab"
        try fixture.store.update(stored, events: [])
        fixture.runtimes.place(id, on: "lab")
        await fixture.lab.set(id, to: .running, announce: false)
        try await fixture.manager.reconcile()
        #expect(try fixture.manager.session(id).state == .running, "not taken for absent")
        try await Self.running(fixture) {
            await fixture.lab.set(id, to: .shutOff(reason: .guestShutdown, hasSavedState: false), announce: false)
            await fixture.labConnects()
            let reconciled = try await Self.eventually { try fixture.manager.session(id).state == .open }
            #expect(reconciled, "its VM powered off meanwhile")
        }
    }

    @Test("the idle controller lends this desktop's CPU: it acts on controlled sessions on the local host only")
    func controllerActsOnLocalSessionsOnly() {
        let now = Date()
        var session = Session(id: SessionID(), name: "c", createdAt: now, updatedAt: now)
        #expect(!SessionManager.lendsThisDesktop(session), "not opted in")
        session.daemon.controlled = true
        #expect(SessionManager.lendsThisDesktop(session))
        session.host = "lab"
        #expect(!SessionManager.lendsThisDesktop(session), "a session on another host does not use this desktop's CPU")
    }
}
