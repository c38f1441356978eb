import Foundation
import Logging
import Testing
import VMSessionCore
import VMSessionStore
@testable import VMSessionDaemon

/// The daemon's checkpointer copies the WAL into the database file when the writer says it grew, so that no
/// request's commit does (the store's side is in `WALCheckpointTests`).
@Suite("Store checkpointer")
struct StoreCheckpointerTests {
    @Test("the WAL reaches the database file without a commit doing it, once it has grown")
    func checkpointsWhenTheWALGrew() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vms-checkpointer-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("db.sqlite").path
        let fileBytes = { ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0 }
        let store = try SessionStore(path: path)
        let before = fileBytes()

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await StoreCheckpointer(store: store, logger: Logger(label: "test")).run() }
            let now = Date()
            let session = Session(id: SessionID(), name: "wal", createdAt: now, updatedAt: now)
            _ = try store.createSession(
                StoredSession(session: session, secret: SecretDigest(kdf: "scrypt:16384:8:1", salt: [1], hash: [2])), tokenHash: [1],
                event: (.sessionCreated, "{}"))
            // About 1500 WAL pages: past SQLite's threshold of 1000, far below the writer's own ceiling.
            let value = String(repeating: "x", count: 1000)
            for index in 0..<600 {
                _ = try store.setProperty("p\(index % 50)", to: value + "\(index)", of: session.id, event: (.propertyChanged, "{}"), at: Date())
            }
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: .seconds(20))
            while fileBytes() == before, clock.now < deadline { try await clock.sleep(for: .milliseconds(20)) }
            group.cancelAll()
        }
        #expect(fileBytes() > before, "the checkpointer copied the WAL into the file")
    }
}
