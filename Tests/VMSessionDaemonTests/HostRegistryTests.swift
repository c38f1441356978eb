import Foundation
import Logging
import Synchronization
import Testing
import VMSessionCore
@testable import VMSessionDaemon
import VMSessionStore

@Suite("The host registry and its monitor")
struct HostRegistryTests {
    static let logger = Logger(label: "test.hosts")

    static func registry(
        _ store: SessionStore, configured: [HostDefinition] = [], sessions: @escaping @Sendable (String) -> Int = { _ in 0 }
    ) throws -> HostRegistry {
        try HostRegistry(store: store, localURI: "test:///default", configured: configured, sessionCount: sessions, logger: logger)
    }

    static func admin(_ name: String, _ uri: String = "test:///default") throws -> HostDefinition {
        try HostDefinition.validated(name: name, uri: uri, labels: ["room": "a"], maxSessions: 3, source: .admin)
    }

    @Test("the local host is always there and connected; added hosts, drain flags and the config file's hosts survive a restart; a host gone from the config file goes")
    func survivesRestart() async throws {
        let store = try SessionStore.inMemory()
        let configured = try HostDefinition.parse(spec: "cfg test:///default maxSessions=2")
        let first = try Self.registry(store, configured: [configured])
        #expect(first.all().map(\.definition.name) == ["cfg", "local"])
        #expect(try first.host(named: "local").isConnected)
        _ = try await first.add(try Self.admin("lab1"))
        _ = try await first.setDraining("local", true)
        _ = try await first.setDraining("cfg", true)

        let second = try Self.registry(store, configured: [configured])
        #expect(second.all().map(\.definition.name) == ["cfg", "lab1", "local"])
        #expect(try second.host(named: "local").definition.draining)
        #expect(try second.host(named: "cfg").definition.draining, "a config host's drain flag is the admin's, kept")
        #expect(try second.host(named: "lab1").definition == (try Self.admin("lab1")))
        if case .connecting = try second.host(named: "lab1").link {} else { Issue.record("a host known before starts connecting again") }

        let third = try Self.registry(store, configured: [])
        #expect(third.all().map(\.definition.name) == ["lab1", "local"])
    }

    @Test("the monitor is told of the hosts known at start and of each one added, not of the local host")
    func announcesRemoteHosts() async throws {
        let store = try SessionStore.inMemory()
        let registry = try Self.registry(store, configured: [try HostDefinition.parse(spec: "cfg test:///default")])
        _ = try await registry.add(try Self.admin("lab1"))
        registry.finish()
        var announced: [String] = []
        for await host in registry.remoteHosts { announced.append(host.name) }
        #expect(announced == ["cfg", "lab1"])
    }

    @Test("removing is refused for the local host, a config host, a host holding sessions and an unknown host, and changes nothing")
    func removeRefusals() async throws {
        let store = try SessionStore.inMemory()
        let busy = Mutex<Set<String>>(["busy"])
        let registry = try Self.registry(store, configured: [try HostDefinition.parse(spec: "cfg test:///default")]) { name in
            busy.withLock { $0.contains(name) ? 1 : 0 }
        }
        _ = try await registry.add(try Self.admin("busy"))
        let before = registry.all()
        let refusals: [(String, VMSessionError.Code, String)] = [
            ("local", VMSessionError.Code.invalidState, "daemon's own host"), ("cfg", .invalidState, "config file"),
            ("busy", .invalidState, "holds 1 session"), ("nope", .notFound, "no host"),
        ]
        for (name, code, words) in refusals {
            let error = await #expect(throws: VMSessionError.self) { try await registry.remove(name) }
            #expect(error?.code == code, "\(name)")
            #expect(error?.message.contains(words) == true, "\(name): \(error?.message ?? "")")
        }
        #expect(registry.all() == before)
        #expect(try store.hosts().map(\.name) == ["busy", "cfg", "local"])

        busy.withLock { $0 = [] }
        try await registry.remove("busy")
        #expect(try store.hosts().map(\.name) == ["cfg", "local"])
        await #expect(throws: VMSessionError.self) { _ = try await registry.add(try Self.admin("cfg")) }
    }

    @Test("a removed host's monitor loop is no longer current, and a host added again under that name is a new one")
    func removedHostIsNotCurrent() async throws {
        let store = try SessionStore.inMemory()
        let registry = try Self.registry(store)
        _ = try await registry.add(try Self.admin("lab1"))
        var iterator = registry.remoteHosts.makeAsyncIterator()
        let first = try #require(await iterator.next())
        #expect(registry.isCurrent(first))
        try await registry.remove("lab1")
        #expect(!registry.isCurrent(first))
        #expect(registry.report(first, .connected(at: Date())) == nil)
        _ = try await registry.add(try Self.admin("lab1"))
        let second = try #require(await iterator.next())
        #expect(registry.isCurrent(second) && !registry.isCurrent(first))
    }

    /// Polls `registry` until host `name` satisfies `done`, for up to `timeout`.
    static func wait(
        for name: String, in registry: HostRegistry, within timeout: Duration = .seconds(20), _ done: (HostStatus) -> Bool
    ) async throws -> HostStatus {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            let host = try registry.host(named: name)
            if done(host) { return host }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try registry.host(named: name)
    }

    @Test("the monitor connects to a real libvirt host, measures its capacity and latency, reads the local capacity, and reports a host it cannot reach as unreachable with libvirt's reason")
    func monitorConnectsAndReportsFailures() async throws {
        let store = try SessionStore.inMemory()
        let registry = try Self.registry(store)
        var settings = HostMonitor.Settings()
        settings.probeInterval = .milliseconds(200)
        settings.connectTimeout = .seconds(10)
        let monitor = HostMonitor(registry: registry, settings: settings, logger: Self.logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await monitor.run() }
            try await Self.checkMonitored(registry)
            group.cancelAll()
        }
    }

    /// What the monitor test checks while the monitor runs.
    static func checkMonitored(_ registry: HostRegistry) async throws {
        _ = try await registry.add(try Self.admin("test"))
        // Port 1 on the loopback: ssh is refused at once.
        _ = try await registry.add(try Self.admin("gone", "qemu+ssh://nobody@127.0.0.1:1/system"))

        let test = try await Self.wait(for: "test", in: registry) { $0.isConnected && $0.latency != nil }
        #expect(test.isConnected)
        // libvirt's test driver describes a host of 16 CPUs (2 NUMA nodes × 2 sockets × 2 cores × 2 threads).
        #expect(test.capacity?.cpus == 16)
        #expect((test.capacity?.memory ?? 0) > 0)
        #expect(test.latency != nil)

        let gone = try await Self.wait(for: "gone", in: registry) { if case .unreachable = $0.link { true } else { false } }
        guard case .unreachable(_, let reason) = gone.link else {
            Issue.record("host 'gone' is \(gone.link)")
            return
        }
        #expect(!reason.isEmpty)
        #expect(gone.latency == nil)

        let local = try await Self.wait(for: "local", in: registry) { $0.capacity != nil }
        #expect(local.capacity?.cpus == ProcessInfo.processInfo.activeProcessorCount)
        #expect(local.isConnected)
    }
}
