import Foundation
import Testing
import VMSessionCore
@testable import VMSessionStore

/// The writer's commits never checkpoint the WAL below its ceiling: they signal, and the checkpoint runs on a
/// connection of its own (``WALCheckpoints``).
@Suite("WAL checkpoints")
struct WALCheckpointTests {
    /// A database file in a directory of its own, removed with everything SQLite put beside it.
    final class Directory {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("vms-wal-\(UUID())")
        var database: String { url.appendingPathComponent("db.sqlite").path }
        init() throws { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
        deinit { try? FileManager.default.removeItem(at: url) }

        var databaseBytes: Int { ((try? FileManager.default.attributesOfItem(atPath: database))?[.size] as? Int) ?? 0 }
    }

    /// `count` commits of a property with a value of about 1 KiB: a few WAL pages each.
    static func commit(_ count: Int, to store: SessionStore) throws {
        let stored = SessionStoreTests.newSession()
        _ = try store.createSession(stored, tokenHash: [1], event: (.sessionCreated, "{}"))
        let value = String(repeating: "x", count: 1000)
        for index in 0..<count {
            _ = try store.setProperty("p\(index % 50)", to: value + "\(index)", of: stored.session.id, event: (.propertyChanged, "{}"), at: Date())
        }
    }

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
        let directory = try Directory()
        let store = try SessionStore(path: directory.database)
        let before = directory.databaseBytes
        try Self.commit(600, to: store)
        // SQLite's auto-checkpoint would have copied the WAL into the file at 1000 pages, on a commit.
        #expect(directory.databaseBytes == before, "no commit checkpointed")
        #expect(await Self.signalled(store))
        let result = try store.checkpoint()
        #expect(result.walFrames > 1000)
        #expect(result.checkpointed == result.walFrames, "nothing reads, so all of it is copied")
        #expect(directory.databaseBytes > before)
        // What was written is all there, from the file.
        let reopened = try SessionStore(path: directory.database)
        #expect(try reopened.allSessions().count == 1)
    }

    @Test("a store that is never checkpointed checkpoints itself at the ceiling, so its WAL stays bounded")
    func writerCheckpointsAtTheCeiling() throws {
        let directory = try Directory()
        let store = try SessionStore(path: directory.database, checkpointPages: .init(signal: 10, ceiling: 200))
        try Self.commit(600, to: store)
        let result = try store.checkpoint()
        // Without the ceiling the WAL would hold every commit's pages: well over 1000.
        #expect(result.walFrames < 200 + 50)
    }

    @Test("a store in memory has no WAL: its growth stream ends at once and a checkpoint does nothing")
    func inMemoryHasNone() async throws {
        let store = try SessionStore.inMemory()
        #expect(try store.checkpoint() == (0, 0))
        var signals = store.walGrowth.makeAsyncIterator()
        #expect(await signals.next() == nil)
    }
}
