import VMSessionCore
import VMSessionHypervisor
import VMSessionMetrics
import VMSessionStore

/// Reads, when `GET /metrics` is scraped, the state that the daemon's owners already keep (sessions and their
/// caps from the session manager, the desktop's idle state from the idle controller, console clients from the
/// console hub, each VM's use from the hypervisor, the checkpoints its commits paid for from the store) into a
/// ``MetricsSnapshot``.
///
/// Why at scrape time: these are gauges that mirror state, so reading the owner when asked keeps one owner
/// per piece of state and gives none of them a new job. The hypervisor's statistics are one bulk libvirt call,
/// made off the cooperative pool (on the hypervisor's queue) and bounded by ``statsTimeout``: a stuck libvirt
/// costs the scrape its per-VM series (`vmsessiond_libvirt_stats_up` 0), never the scrape.
public struct MetricsCollector: Sendable {
    public let metrics: DaemonMetrics
    let manager: SessionManager
    let hypervisor: (any Hypervisor)?
    let controller: IdleController?
    let consoles: ConsoleHub?
    let hosts: HostRegistry?
    let store: SessionStore?
    let statsTimeout: Duration
    let clock: any Clock<Duration>

    /// How long a scrape waits for libvirt's statistics: well within Prometheus's default 10 s scrape timeout,
    /// and within scrape timeouts as short as 2 s.
    public static let defaultStatsTimeout: Duration = .seconds(1)

    public init(
        metrics: DaemonMetrics, manager: SessionManager, hypervisor: (any Hypervisor)?, controller: IdleController?,
        consoles: ConsoleHub?, hosts: HostRegistry? = nil, store: SessionStore? = nil, statsTimeout: Duration = defaultStatsTimeout, clock: any Clock<Duration> = ContinuousClock()
    ) {
        self.metrics = metrics
        self.manager = manager
        self.hypervisor = hypervisor
        self.controller = controller
        self.consoles = consoles
        self.hosts = hosts
        self.store = store
        self.statsTimeout = statsTimeout
        self.clock = clock
    }

    public func collect() async -> MetricsSnapshot {
        var snapshot = MetricsSnapshot()
        for session in await manager.allSessions() {
            snapshot.sessionsByState[session.state, default: 0] += 1
            if session.state != .closed { snapshot.executionCaps[session.id] = session.executionCap }
        }
        if let controller {
            let status = await controller.status()
            snapshot.desktopIdle = status.isSystemIdle
            snapshot.idleThresholdSeconds = status.idleTime
        }
        if let consoles { snapshot.consoleClients = await consoles.viewerCount() }
        snapshot.storeWriterCheckpoints = store?.writerCheckpoints
        for host in hosts?.all() ?? [] {
            let latency = host.latency?.inSeconds
            snapshot.hosts[host.definition.name] = (host.isConnected, latency)
        }
        if let hypervisor {
            let stats = await Self.withDeadline(statsTimeout, clock: clock) { try await hypervisor.machineStats() }
            snapshot.machineStatsAnswered = stats != nil
            snapshot.machines = stats ?? [:]
        }
        return snapshot
    }

    /// `body`'s value, or nil if it failed or did not return within `timeout` (it is cancelled then).
    static func withDeadline<T: Sendable>(
        _ timeout: Duration, clock: any Clock<Duration>, _ body: @escaping @Sendable () async throws -> T
    ) async -> T? {
        await withTaskGroup(of: T?.self) { group in
            group.addTask { try? await body() }
            group.addTask {
                try? await clock.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}
