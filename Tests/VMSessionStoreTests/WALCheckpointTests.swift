import Foundation
import Testing
@testable import VMSessionStore
import VMSessionTestSupport

/// The writer's commits never checkpoint the WAL below its ceiling: they signal, and the checkpoint runs on a
/// connection of its own (``WALCheckpoints``).
@Suite("WAL checkpoints")
struct WALCheckpointTests {
    /// Whether a signal is waiting on the store's growth stream (it holds at most one, so it is there at once).
    static func signalled(_ store: SessionStore) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                var signals = store.walGrowth.makeAsyncIterator()
                return await signals.next() != nil
            }
            group.addTask {
                try? await ContinuousClock().sleep(for: .seconds(2))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    @Test("commits past SQLite's own threshold leave the WAL to the checkpointer, and signal it")
    func commitsDoNotCheckpoint() async throws {
        let file = try StoreFile()
        let store = try SessionStore(path: file.path)
        let before = file.databaseBytes
        try StoreFile.commitProperties(600, to: store)
        // SQLite's auto-checkpoint would have copied the WAL into the file at 1000 pages, on a commit.
        #expect(file.databaseBytes == before, "no commit checkpointed")
        #expect(await Self.signalled(store))
        let result = try store.checkpoint()
        #expect(result.walFrames > 1000)
        #expect(result.checkpointed == result.walFrames, "nothing reads, so all of it is copied")
        #expect(file.databaseBytes > before)
        // What was written is all there, from the file.
        let reopened = try SessionStore(path: file.path)
        #expect(try reopened.allSessions().count == 1)
    }

    @Test("a store that is never checkpointed checkpoints itself at the ceiling, so its WAL stays bounded, and counts each time")
    func writerCheckpointsAtTheCeiling() throws {
        let file = try StoreFile()
        let store = try SessionStore(path: file.path, checkpointPages: .init(signal: 10, ceiling: 200))
        #expect(store.writerCheckpoints == 0)
        try StoreFile.commitProperties(600, to: store)
        let counted = store.writerCheckpoints
        let result = try store.checkpoint()
        // Without the ceiling the WAL would hold every commit's pages: well over 1000.
        #expect(result.walFrames < 200 + 50)
        // Each one restarted the WAL, which then grew to the ceiling again: at least one per 200 pages written.
        #expect(counted >= 2)
        // The checkpointer's own checkpoint is not the writer's.
        #expect(store.writerCheckpoints == counted)
    }

    @Test("a store in memory has no WAL: its growth stream ends at once and a checkpoint does nothing")
    func inMemoryHasNone() async throws {
        let store = try SessionStore.inMemory()
        #expect(try store.checkpoint() == (0, 0))
        var signals = store.walGrowth.makeAsyncIterator()
        #expect(await signals.next() == nil)
    }
}
