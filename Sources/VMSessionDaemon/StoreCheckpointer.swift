import Logging
import ServiceLifecycle
import VMSessionCore
import VMSessionStore

/// Checkpoints the store's write-ahead log whenever the writer says it has grown, so that no request's commit
/// pays for the copy and the two fdatasyncs a checkpoint costs (see the store's `WALCheckpoints`). A `Service` in
/// the daemon's group; it sleeps until the WAL grows, and each checkpoint runs off the cooperative pool.
public struct StoreCheckpointer: Service {
    let store: SessionStore
    let logger: Logger

    public init(store: SessionStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    public func run() async throws {
        let store = self.store
        for await _ in store.walGrowth.cancelOnGracefulShutdown() {
            do {
                let result = try await offPool(qos: .utility) { try store.checkpoint() }
                logger.debug("WAL checkpointed", metadata: ["frames": "\(result.walFrames)", "checkpointed": "\(result.checkpointed)"])
            } catch {
                // The next growth tries again; past the ceiling the writer checkpoints itself.
                logger.warning("WAL checkpoint failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
