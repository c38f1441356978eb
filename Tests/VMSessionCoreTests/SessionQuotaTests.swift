import Foundation
import Testing
import VMSessionCore

@Suite("Session quota")
struct SessionQuotaTests {
    let quota = SessionQuota(
        sessions: 4, sessionsPerClient: 2,
        resources: .init(cpus: 8, memory: 8192, disk: 100_000), resourcesPerClient: .init(cpus: 4, memory: 4096, disk: 50_000))

    func holding(_ client: String, cpus: Int = 1, memory: Int = 256, disk: Int = 1024, open: Bool = true) -> SessionQuota.Holding {
        .init(id: SessionID(), client: client, resources: open ? .init(cpus: cpus, memory: memory, disk: disk) : nil)
    }

    func error(_ body: () throws(VMSessionError) -> Void) -> VMSessionError? {
        do { try body() } catch { return error }
        return nil
    }

    @Test("a client may create sessions up to its limit, then gets too_many_sessions naming it")
    func perClientSessions() throws {
        let existing = [holding("a"), holding("a", open: false)]
        let refused = error { () throws(VMSessionError) in try quota.checkCreate(by: "a", existing: existing) }
        #expect(refused?.code == .tooManySessions)
        #expect(refused?.message.contains("a holds 2 sessions") == true)
        try quota.checkCreate(by: "b", existing: existing)
    }

    @Test("the daemon's session limit holds across clients")
    func daemonSessions() {
        let existing = [holding("a"), holding("b"), holding("c"), holding("d")]
        #expect(error { () throws(VMSessionError) in try quota.checkCreate(by: "e", existing: existing) }?.code == .tooManySessions)
    }

    @Test(
        "opening past a resource limit is insufficient_resources naming the resource, in all or per client",
        arguments: [
            (Requirements(cpus: 4, memory: 256, disk: 1024, version: "v"), "cpus"),
            (Requirements(cpus: 1, memory: 4000, disk: 1024, version: "v"), "MiB of memory"),
            (Requirements(cpus: 1, memory: 256, disk: 49_500, version: "v"), "MiB of disk"),
        ])
    func resourceLimits(requirements: Requirements, resource: String) {
        // Client "a" already holds 1 cpu, 256 MiB, 1024 MiB: each request passes it over its per-client limit.
        let existing = [holding("a")]
        let refused = error { () throws(VMSessionError) in
            try quota.checkOpen(SessionID(), by: "a", asking: requirements, existing: existing)
        }
        #expect(refused?.code == .insufficientResources)
        #expect(refused?.message.contains(resource) == true)
        #expect(refused?.message.contains("per-origin") == true)
    }

    @Test("the daemon-wide resources count every client's open sessions, closed ones not at all")
    func daemonResources() throws {
        let existing = [holding("a", cpus: 4), holding("b", cpus: 3), holding("c", cpus: 16, open: false)]
        let one = Requirements(cpus: 1, memory: 256, disk: 1024, version: "v")
        try quota.checkOpen(SessionID(), by: "d", asking: one, existing: existing)
        let two = Requirements(cpus: 2, memory: 256, disk: 1024, version: "v")
        let refused = error { () throws(VMSessionError) in try quota.checkOpen(SessionID(), by: "d", asking: two, existing: existing) }
        #expect(refused?.code == .insufficientResources)
        #expect(refused?.message.contains("daemon") == true)
    }

    @Test("re-opening a session does not count what it held itself")
    func reopenDoesNotDoubleCount() throws {
        let own = holding("a", cpus: 4)
        try quota.checkOpen(own.id, by: "a", asking: Requirements(cpus: 4, memory: 256, disk: 1024, version: "v"), existing: [own])
    }

    @Test("a session holds resources from open until it is closed")
    func holdingFollowsState() {
        var session = Session(id: SessionID(), name: "n", createdAt: .now, updatedAt: .now)
        #expect(SessionQuota.Holding(id: session.id, client: "a", session: session).resources == nil)
        session.requirements = Requirements(cpus: 2, memory: 512, disk: 2048, version: "v")
        session.state = .saved
        #expect(SessionQuota.Holding(id: session.id, client: "a", session: session).resources == .init(cpus: 2, memory: 512, disk: 2048))
        session.state = .closed
        #expect(SessionQuota.Holding(id: session.id, client: "a", session: session).resources == nil)
    }
}
