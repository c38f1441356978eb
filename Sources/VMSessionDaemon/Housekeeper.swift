import Foundation
import Logging
import ServiceLifecycle
import VMSessionCore
import VMSessionStore

/// Applies the ``RetentionPolicy`` at start and then every ``interval``, so that events, operations, tokens
/// and pending origins do not pile up forever. A `Service` in the daemon's group; all of its work is store
/// calls, run off the cooperative pool, plus telling the ``SessionManager`` which tokens went (it owns the
/// token cache and ends their streams).
public struct Housekeeper: Service {
    public static let interval: Duration = .seconds(3600)

    let store: SessionStore
    let manager: SessionManager
    let policy: RetentionPolicy
    let clock: any Clock<Duration>
    let interval: Duration
    let logger: Logger

    public init(
        store: SessionStore, manager: SessionManager, policy: RetentionPolicy, clock: any Clock<Duration> = ContinuousClock(),
        interval: Duration = Self.interval, logger: Logger
    ) {
        self.store = store
        self.manager = manager
        self.policy = policy
        self.clock = clock
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        await repeatUntilShutdown(every: interval, on: clock) { await sweep(now: Date()) }
    }

    /// One pass over everything the policy bounds. Failures are logged; the next pass tries again.
    public func sweep(now: Date) async {
        let policy = self.policy
        let store = self.store
        let day: TimeInterval = 86_400
        do {
            let result = try await offPool {
                (
                    events: try store.pruneEvents(
                        keepPerSession: policy.eventsPerSession, olderThan: now.addingTimeInterval(-Double(policy.eventDays) * day)),
                    operations: try store.pruneOperations(finishedBefore: now.addingTimeInterval(-Double(policy.operationDays) * day)),
                    tokens: try store.pruneTokens(keepPerSession: policy.tokensPerSession),
                    origins: try store.prunePendingOrigins(lastSeenBefore: now.addingTimeInterval(-Double(policy.pendingOriginDays) * day))
                )
            }
            if !result.tokens.isEmpty { await manager.forgetTokens(result.tokens) }
            let sessions = await manager.deleteClosedSessions(unchangedSince: now.addingTimeInterval(-Double(policy.closedSessionDays) * day))
            if result.events + result.operations + result.tokens.count + result.origins + sessions > 0 {
                logger.info(
                    "retention",
                    metadata: ["events": "\(result.events)", "operations": "\(result.operations)", "tokens": "\(result.tokens.count)",
                               "pendingOrigins": "\(result.origins)", "closedSessions": "\(sessions)"])
            }
        } catch {
            logger.error("retention pass failed", metadata: ["error": "\(error)"])
        }
    }
}

/// The loop of the daemon's periodic services: `pass` at once, then every `interval` of `clock`, until the
/// task is cancelled or graceful shutdown begins (which also ends a wait under way).
func repeatUntilShutdown(every interval: Duration, on clock: any Clock<Duration>, _ pass: () async -> Void) async {
    while !Task.isCancelled, !Task.isShuttingDownGracefully {
        await pass()
        do { try await cancelWhenGracefulShutdown { try await clock.sleep(for: interval) } } catch { return }
    }
}

