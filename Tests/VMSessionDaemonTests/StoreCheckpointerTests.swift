import Foundation
import Logging
import Testing
import VMSessionMetrics
import VMSessionStore
import VMSessionTestSupport
@testable import VMSessionDaemon

/// The daemon's checkpointer copies the WAL into the database file when the writer says it grew, so that no
/// request's commit does (the store's side is in `WALCheckpointTests`).
@Suite("Store checkpointer")
struct StoreCheckpointerTests {
    @Test("the WAL reaches the database file without a commit doing it, once it has grown, and each checkpoint is counted with its duration")
    func checkpointsWhenTheWALGrew() async throws {
        let file = try StoreFile()
        let store = try SessionStore(path: file.path)
        let metrics = DaemonMetrics()
        let before = file.databaseBytes
        func checkpoints(_ outcome: String) -> Double? {
            MetricsCountingTests.value(metrics, "vmsessiond_store_checkpoints_total", ["outcome": outcome])
        }

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await StoreCheckpointer(store: store, metrics: metrics, logger: Logger(label: "test")).run() }
            // Below SQLite's threshold: nothing to checkpoint, nothing counted.
            try StoreFile.commitProperties(5, to: store, session: "few")
            let clock = ContinuousClock()
            try await clock.sleep(for: .milliseconds(200))
            #expect(checkpoints("succeeded") == nil)
            // Past it, far below the writer's own ceiling.
            try StoreFile.commitProperties(600, to: store)
            let deadline = clock.now.advanced(by: .seconds(20))
            while file.databaseBytes == before || checkpoints("succeeded") == nil, clock.now < deadline {
                try await clock.sleep(for: .milliseconds(20))
            }
            group.cancelAll()
        }
        #expect(file.databaseBytes > before, "the checkpointer copied the WAL into the file")
        let counted = try #require(checkpoints("succeeded"))
        #expect(counted >= 1)
        #expect(checkpoints("failed") == nil)
        #expect(store.writerCheckpoints == 0, "no commit had to checkpoint the WAL itself")
        // One duration per checkpoint.
        #expect(MetricsCountingTests.value(metrics, "vmsessiond_store_checkpoint_duration_seconds_count") == counted)
        #expect((MetricsCountingTests.value(metrics, "vmsessiond_store_checkpoint_duration_seconds_sum") ?? 0) > 0)
    }
}
