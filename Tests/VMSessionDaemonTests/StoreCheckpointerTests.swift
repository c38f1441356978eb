import Foundation
import Logging
import Testing
import VMSessionStore
import VMSessionTestSupport
@testable import VMSessionDaemon

/// The daemon's checkpointer copies the WAL into the database file when the writer says it grew, so that no
/// request's commit does (the store's side is in `WALCheckpointTests`).
@Suite("Store checkpointer")
struct StoreCheckpointerTests {
    @Test("the WAL reaches the database file without a commit doing it, once it has grown")
    func checkpointsWhenTheWALGrew() async throws {
        let file = try StoreFile()
        let store = try SessionStore(path: file.path)
        let before = file.databaseBytes

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await StoreCheckpointer(store: store, logger: Logger(label: "test")).run() }
            // Past SQLite's threshold, far below the writer's own ceiling.
            try StoreFile.commitProperties(600, to: store)
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: .seconds(20))
            while file.databaseBytes == before, clock.now < deadline { try await clock.sleep(for: .milliseconds(20)) }
            group.cancelAll()
        }
        #expect(file.databaseBytes > before, "the checkpointer copied the WAL into the file")
    }
}
