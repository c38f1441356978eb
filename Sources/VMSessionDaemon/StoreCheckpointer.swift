import Logging
import ServiceLifecycle
import VMSessionCore
import VMSessionMetrics
import VMSessionStore

/// Checkpoints the store's write-ahead log whenever the writer says it has grown, so that no request's commit
/// pays for the copy and the two fdatasyncs a checkpoint costs (see the store's `WALCheckpoints`). A `Service` in
/// the daemon's group; it sleeps until the WAL grows, and each checkpoint runs off the cooperative pool. Each
/// checkpoint is counted in `/metrics` (how many, by outcome, and how long each took), so a slow disk shows there.
public struct StoreCheckpointer: Service {
    let store: SessionStore
    let metrics: DaemonMetrics
    let logger: Logger
    let clock: ElapsedClock

    public init(store: SessionStore, metrics: DaemonMetrics, logger: Logger, clock: ElapsedClock = ElapsedClock(ContinuousClock())) {
        self.store = store
        self.metrics = metrics
        self.logger = logger
        self.clock = clock
    }

    public func run() async throws {
        let store = self.store
        for await _ in store.walGrowth.cancelOnGracefulShutdown() {
            let started = clock.now
            do {
                let result = try await offPool(qos: .utility) { try store.checkpoint() }
                metrics.storeCheckpointed(.succeeded, after: started.duration(to: clock.now))
                logger.debug("WAL checkpointed", metadata: ["frames": "\(result.walFrames)", "checkpointed": "\(result.checkpointed)"])
            } catch {
                metrics.storeCheckpointed(.failed, after: started.duration(to: clock.now))
                // The next growth tries again; past the ceiling the writer checkpoints itself.
                logger.warning("WAL checkpoint failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
