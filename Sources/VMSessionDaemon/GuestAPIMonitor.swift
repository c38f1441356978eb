import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import VMSessionCore

/// Probes the API of every running guest and tells the session manager when it starts or stops answering,
/// as the CernVM Web API did: every second until it answers, then at a slower pace; two failures in a row
/// and it is unavailable. (Pausing, hibernating or stopping a VM makes its API unavailable at once; the
/// manager does that itself.)
public actor GuestAPIMonitor: Service {
    public struct Configuration: Sendable {
        /// How often to probe while the API does not answer.
        public var searchInterval: Duration = .seconds(1)
        /// How often to probe while it answers.
        public var watchInterval: Duration = .seconds(10)
        /// How long one probe may take.
        public var probeTimeout: Duration = .seconds(2)
        /// Consecutive failures before an answering API counts as gone.
        public var failuresAllowed = 2
        public init() {}
    }

    struct Probe {
        var route: GuestAPIRoute
        var next: ContinuousClock.Instant
        var failures = 0
    }

    let manager: SessionManager
    let configuration: Configuration
    let logger: Logger
    private let clock = ContinuousClock()
    private var probes: [SessionID: Probe] = [:]

    public init(manager: SessionManager, configuration: Configuration = .init(), logger: Logger) {
        self.manager = manager
        self.configuration = configuration
        self.logger = logger
    }

    /// Wakes every `searchInterval`, probes the guests that are due, until graceful shutdown.
    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            await tick()
            try? await Task.sleep(for: configuration.searchInterval)
        }
    }

    func tick() async {
        let targets = await manager.guestAPITargets()
        for id in probes.keys where targets[id] == nil { probes[id] = nil }
        for (id, route) in targets where probes[id]?.route != route {
            probes[id] = Probe(route: route, next: clock.now)
        }
        let now = clock.now
        let due = probes.filter { $0.value.next <= now }
        await withTaskGroup(of: (SessionID, Bool).self) { group in
            for (id, probe) in due {
                let timeout = configuration.probeTimeout
                group.addTask { (id, await Self.answers(route: probe.route, timeout: timeout)) }
            }
            for await (id, answered) in group {
                await settle(id, answered: answered)
            }
        }
    }

    /// Schedules the next probe and tells the manager; the manager announces only real changes.
    private func settle(_ id: SessionID, answered: Bool) async {
        guard var probe = probes[id] else { return }
        if answered {
            probe.failures = 0
            probe.next = clock.now + configuration.watchInterval
        } else {
            probe.failures += 1
            probe.next = clock.now + configuration.searchInterval
        }
        probes[id] = probe
        if answered {
            await manager.setGuestAPI(id, available: true, reason: "the guest's API answers")
        } else if probe.failures >= configuration.failuresAllowed {
            await manager.setGuestAPI(id, available: false, reason: "the guest's API stopped answering")
        }
    }

    /// Whether anything answers HTTP at the guest's `route` (any status counts: the API is up).
    static func answers(route: GuestAPIRoute, timeout: Duration) async -> Bool {
        let request = HTTPClientRequest(url: route.url(pathAndQuery: "/"))
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .milliseconds(Int64(timeout / .milliseconds(1))))
            _ = try? await response.body.collect(upTo: 1 << 20)
            return true
        } catch {
            return false
        }
    }
}
