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
///
/// Each guest is probed on its own: a probe is a child task of ``run()``'s task group, the loop that starts
/// them never waits for one, and a session has at most one probe in flight. A probe has a deadline that
/// covers the whole answer (head and body; the body is read up to ``Configuration/probeBodyBytes`` and
/// dropped), follows no redirect, and counts as an answer only if it completes in time, so a guest that
/// dribbles or stalls fails its own probe and delays nobody else's `apiAvailable`.
public actor GuestAPIMonitor: Service {
    public struct Configuration: Sendable {
        /// How often to probe while the API does not answer (and how often the monitor looks for due probes).
        public var searchInterval: Duration = .seconds(1)
        /// How often to probe while it answers.
        public var watchInterval: Duration = .seconds(10)
        /// How long one probe may take, its whole answer included.
        public var probeTimeout: Duration = .seconds(2)
        /// Consecutive failures before an answering API counts as gone.
        public var failuresAllowed = 2
        /// How much of a probe's answer body is read (and dropped) before the probe counts as answered.
        public var probeBodyBytes = 64 << 10
        public init() {}
    }

    struct Probe {
        var route: GuestAPIRoute
        var next: ContinuousClock.Instant
        var failures = 0
        /// Whether a probe of this route is under way (the loop starts no second one).
        var inFlight = false
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

    /// Every `searchInterval`, starts the probes that are due as children of one task group, until graceful
    /// shutdown, which also cancels the probes under way.
    public func run() async {
        let (clock, configuration) = (clock, configuration)
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled, !Task.isShuttingDownGracefully {
                for (id, route) in await due() {
                    group.addTask {
                        let answered = await Self.answers(route, timeout: configuration.probeTimeout, bodyBytes: configuration.probeBodyBytes)
                        await self.settle(id, route: route, answered: answered)
                    }
                }
                do { try await cancelWhenGracefulShutdown { try await clock.sleep(for: configuration.searchInterval) } } catch { break }
            }
            group.cancelAll()
        }
    }

    /// Follows the manager's list of targets and returns the probes to start now (marked in flight).
    func due() async -> [(SessionID, GuestAPIRoute)] {
        let targets = await manager.guestAPITargets()
        for id in probes.keys where targets[id] == nil { probes[id] = nil }
        for (id, route) in targets where probes[id]?.route != route {
            probes[id] = Probe(route: route, next: clock.now)
        }
        let now = clock.now
        var starting: [(SessionID, GuestAPIRoute)] = []
        for (id, probe) in probes where !probe.inFlight && probe.next <= now {
            probes[id]?.inFlight = true
            starting.append((id, probe.route))
        }
        return starting
    }

    /// Schedules the next probe and tells the manager; the manager announces only real changes. A result for
    /// a route the session no longer has (it stopped, or restarted elsewhere) is dropped.
    func settle(_ id: SessionID, route: GuestAPIRoute, answered: Bool) async {
        guard var probe = probes[id], probe.route == route else { return }
        probe.inFlight = false
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

    /// Whether the guest's API answers HTTP at `/` (any status counts: the API is up), the whole answer
    /// within `timeout`: the head, then the body up to `bodyBytes`, which is dropped. No redirect is followed.
    static func answers(_ route: GuestAPIRoute, timeout: Duration, bodyBytes: Int) async -> Bool {
        let request = HTTPClientRequest(url: route.url(pathAndQuery: "/"))
        let deadline = NIODeadline.now() + .nanoseconds(Int64(timeout / .nanoseconds(1)))
        let answer: Bool? = await withTaskGroup(of: Bool?.self) { group in
            group.addTask {
                do {
                    let response = try await GuestAPIRoute.client.execute(request, deadline: deadline)
                    var read = 0
                    for try await chunk in response.body {
                        read += chunk.readableBytes
                        if read >= bodyBytes { break }
                    }
                    return true
                } catch {
                    return false
                }
            }
            // The client's deadline covers the head only: this one covers the body too.
            group.addTask {
                try? await Task.sleep(until: .now + timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        return answer ?? false
    }
}
