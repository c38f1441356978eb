import Foundation
import Logging
import ServiceLifecycleTestKit
import Testing
import VMSessionCore
@testable import VMSessionDaemon
import VMSessionHypervisor
import VMSessionMetrics
@testable import VMSessionStore
import VMSessionTestSupport

/// The counters that the session manager and the event hub keep, against what they did, and the scrape-time
/// collector's bound on the hypervisor's statistics (the scripted hypervisor plays a stuck libvirt).
@Suite("Metrics counted where things happen")
struct MetricsCountingTests {
    /// The value of a series in the registry's text (summed over the series whose labels include `labels`).
    static func value(_ metrics: DaemonMetrics, _ name: String, _ labels: [String: String] = [:]) -> Double? {
        let text = String(decoding: metrics.exposition(MetricsSnapshot()), as: UTF8.self)
        var total: Double?
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            let seriesName = series.split(separator: "{").first.map(String.init) ?? ""
            guard seriesName == name, labels.allSatisfy({ series.contains("\($0.key)=\"\($0.value)\"") }) else { continue }
            total = (total ?? 0) + value
        }
        return total
    }

    @Test("an operation that fails is counted as failed, one that succeeds as succeeded, each with its duration")
    func failedOperation() async throws {
        let fixture = try SessionManagerRaceTests.Fixture()
        let metrics = DaemonMetrics()
        let manager = SessionManager(
            store: fixture.store, events: fixture.events, hypervisor: fixture.hypervisor,
            images: ImageStore(
                store: fixture.store, catalog: ImageCatalog(applianceDirectory: fixture.directory), directory: fixture.directory + "/images",
                downloader: ImageDownloader(logger: Logger(label: "test")), logger: Logger(label: "test")),
            configuration: .init(stopGrace: .seconds(1)), metrics: metrics, logger: Logger(label: "test"))
        let id = try fixture.session(.open)
        try await manager.reconcile()
        try await SessionManagerRaceTests.running(manager) {
            let events = fixture.events.subscribe(to: id)
            await fixture.hypervisor.failNext(.start, with: VMSessionError(.hypervisorError, "scripted failure"))
            let failed = try await manager.perform(.start, on: id, input: .start(userData: nil, parameters: [:]))
            _ = await SessionManagerRaceTests.end(of: failed.operation.id, in: events)
            let started = try await manager.perform(.start, on: id, input: .start(userData: nil, parameters: [:]))
            _ = await SessionManagerRaceTests.end(of: started.operation.id, in: events)
            _ = try await manager.perform(.pause, on: id)
        }
        #expect(Self.value(metrics, "vmsessiond_operations_total", ["action": "start", "outcome": "failed"]) == 1)
        #expect(Self.value(metrics, "vmsessiond_operations_total", ["action": "start", "outcome": "succeeded"]) == 1)
        #expect(Self.value(metrics, "vmsessiond_operations_total", ["action": "pause", "outcome": "succeeded"]) == 1)
        #expect(Self.value(metrics, "vmsessiond_operations_total") == 3)
        #expect(Self.value(metrics, "vmsessiond_operation_duration_seconds_count", ["action": "start"]) == 2)
    }

    @Test("an operation cut short by graceful shutdown is counted as interrupted")
    func interruptedOperation() async throws {
        let fixture = try SessionManagerRaceTests.Fixture()
        let metrics = DaemonMetrics()
        let manager = SessionManager(
            store: fixture.store, events: fixture.events, hypervisor: fixture.hypervisor,
            images: ImageStore(
                store: fixture.store, catalog: ImageCatalog(applianceDirectory: fixture.directory), directory: fixture.directory + "/images",
                downloader: ImageDownloader(logger: Logger(label: "test")), logger: Logger(label: "test")),
            configuration: .init(stopGrace: .seconds(1)), metrics: metrics, logger: Logger(label: "test"))
        let id = try fixture.session(.open)
        await fixture.hypervisor.set(id, to: .shutOff(reason: .neverStarted, hasSavedState: false), announce: false)
        try await manager.reconcile()
        let gate = await fixture.hypervisor.hold(.start)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await manager.run() }
                _ = try await manager.perform(.start, on: id, input: .start(userData: nil, parameters: [:]))
                await gate.reached()
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        #expect(Self.value(metrics, "vmsessiond_operations_total", ["action": "start", "outcome": "interrupted"]) == 1)
        #expect(Self.value(metrics, "vmsessiond_operations_total", ["outcome": "succeeded"]) == nil)
        #expect(Self.value(metrics, "vmsessiond_operations_total", ["outcome": "failed"]) == nil)
    }

    @Test("each event handed to a subscriber is counted as delivered, and a subscriber that falls behind as dropped")
    func deliveredAndDropped() async throws {
        let store = try SessionStore.inMemory()
        let metrics = DaemonMetrics()
        let hub = EventHub(store: store, metrics: metrics)
        let now = Date()
        let a = StoredSession(session: Session(id: SessionID(), name: "a", createdAt: now, updatedAt: now), secret: .init(kdf: "k", salt: [], hash: []))
        let b = StoredSession(session: Session(id: SessionID(), name: "b", createdAt: now, updatedAt: now), secret: .init(kdf: "k", salt: [], hash: []))
        let onlyA = hub.subscribe(to: a.session.id)
        let all = hub.subscribe(to: nil)
        try hub.record { [try store.createSession(a, tokenHash: [1], event: (.sessionCreated, "{}"))] }
        try hub.record { [try store.createSession(b, tokenHash: [2], event: (.sessionCreated, "{}"))] }
        try hub.record { [try store.append(.progress, payload: "{}", for: a.session.id, at: now)] }
        // `all` got 3, `onlyA` 2.
        #expect(Self.value(metrics, "vmsessiond_events_delivered_total") == 5)
        #expect(Self.value(metrics, "vmsessiond_events_written_total", ["type": "sessionCreated"]) == 2)
        #expect(Self.value(metrics, "vmsessiond_events_written_total", ["type": "progress"]) == 1)
        #expect(Self.value(metrics, "vmsessiond_event_subscribers_dropped_total") == nil)
        // Nobody reads: past the buffer, both subscribers are ended (`onlyA` sees only a's events).
        for _ in 0..<EventHub.subscriberBuffer {
            try hub.record { [try store.append(.progress, payload: "{}", for: a.session.id, at: now)] }
        }
        #expect(Self.value(metrics, "vmsessiond_event_subscribers_dropped_total") == 2)
        #expect(hub.subscriberCount == 0)
        // Delivered: every event each one took before it was full (its buffer), nothing after.
        #expect(Self.value(metrics, "vmsessiond_events_delivered_total") == Double(2 * EventHub.subscriberBuffer))
        _ = (onlyA, all)
    }

    @Test("a scrape shows how many checkpoints the store's commits ran themselves at the WAL's ceiling")
    func writerCheckpointsAreScraped() async throws {
        let fixture = try SessionManagerRaceTests.Fixture()
        let manager = fixture.manager()
        let file = try StoreFile()
        let store = try SessionStore(path: file.path, checkpointPages: .init(signal: 10, ceiling: 200))
        let collector = MetricsCollector(
            metrics: DaemonMetrics(), manager: manager, hypervisor: nil, controller: nil, consoles: nil, store: store)
        func scraped() async -> String { String(decoding: collector.metrics.exposition(await collector.collect()), as: UTF8.self) }
        #expect(await scraped().contains("\nvmsessiond_store_writer_checkpoints_total 0\n"))
        try StoreFile.commitProperties(600, to: store)
        let counted = store.writerCheckpoints
        #expect(counted > 0)
        #expect(await scraped().contains("\nvmsessiond_store_writer_checkpoints_total \(counted)\n"))
    }

    @Test("a hypervisor whose statistics never come costs the scrape its per-VM series, not the scrape")
    func stuckStatisticsAreBounded() async throws {
        let fixture = try SessionManagerRaceTests.Fixture()
        let manager = fixture.manager()
        try await manager.reconcile()
        let id = SessionID()
        var stats = MachineStats()
        stats.cpuSeconds = 1.5
        await fixture.hypervisor.setStats([id: stats])
        let collector = MetricsCollector(
            metrics: DaemonMetrics(), manager: manager, hypervisor: fixture.hypervisor, controller: nil, consoles: nil,
            statsTimeout: .milliseconds(200))
        let answered = await collector.collect()
        #expect(answered.machineStatsAnswered == true)
        #expect(answered.machines[id]?.cpuSeconds == 1.5)
        await fixture.hypervisor.setStats(nil)
        let clock = ContinuousClock()
        let started = clock.now
        let stuck = await collector.collect()
        let waited = started.duration(to: clock.now)
        #expect(stuck.machineStatsAnswered == false)
        #expect(stuck.machines.isEmpty)
        #expect(waited < .seconds(30), "the scrape returned (after \(waited)) although the statistics never came")
        let text = String(decoding: collector.metrics.exposition(stuck), as: UTF8.self)
        #expect(text.contains("vmsessiond_libvirt_stats_up 0"))
    }
}
