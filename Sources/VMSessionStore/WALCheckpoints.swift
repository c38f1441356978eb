import GRDB
import GRDBSQLite
import Synchronization

/// Takes SQLite's WAL checkpoints off the commits that would otherwise pay for them.
///
/// Why it exists: in WAL mode SQLite checkpoints by itself on the commit that takes the WAL past 1000 pages (in
/// the daemon, every 200 or so commits). That checkpoint copies the WAL into the database file and fdatasyncs
/// both: 5 to 15 ms on this project's machine, inside whichever request made that commit (a pause, a property
/// whose event a thousand streams wait for). Here the writer's commit only notes that the WAL grew (SQLite's WAL
/// hook, which replaces its own auto-checkpoint), and the daemon's checkpointer (`StoreCheckpointer`) runs a
/// PASSIVE checkpoint on a connection of its own, off the cooperative pool, while the writer goes on appending:
/// SQLite lets one checkpointer and one writer work at once. Durability is unchanged: with synchronous=NORMAL the
/// WAL was only ever synced at checkpoints, and checkpoints still happen about as often.
///
/// If nobody checkpoints (a store without the daemon's service, or a checkpointer that fell behind), the writer
/// does it itself once the WAL reaches ``Pages/ceiling``, as SQLite would have at its own threshold, so the WAL
/// stays bounded. Those checkpoints are counted (``writerCheckpoints``, in `/metrics`): each one made a commit pay
/// for the copy and the syncs, so a count that grows says the checkpointer cannot keep up (a slow disk).
final class WALCheckpoints: Sendable {
    /// When the WAL is reported grown, and when the writer checkpoints it itself.
    struct Pages: Sendable {
        /// SQLite's own auto-checkpoint threshold.
        var signal: Int32 = 1000
        /// 64 MiB of 4 KiB pages.
        var ceiling: Int32 = 16_000
    }

    let pages: Pages
    /// One signal waits at most: a checkpoint covers every commit before it.
    let growth: AsyncStream<Void>
    private let grew: AsyncStream<Void>.Continuation
    /// The checkpointer's own connection, so that a checkpoint never waits for the writer's queue, nor it for one.
    private let checkpointer: DatabaseQueue
    private let writerCheckpointed = Atomic<Int>(0)

    /// How many checkpoints the writer ran itself, at the ceiling.
    var writerCheckpoints: Int { writerCheckpointed.load(ordering: .relaxed) }

    init(path: String, pages: Pages) throws {
        self.pages = pages
        (growth, grew) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        var configuration = Configuration()
        configuration.label = "checkpointer"
        checkpointer = try DatabaseQueue(path: path, configuration: configuration)
    }

    deinit { grew.finish() }

    /// Installs the hook on the writer's connection.
    ///
    /// The hook's context is this object, unretained: the store holds it, and only the store's own methods commit,
    /// so no commit (and no call of the hook) can outlive it.
    func install(on db: Database) {
        let context = Unmanaged.passUnretained(self).toOpaque()
        sqlite3_wal_hook(db.sqliteConnection, { context, connection, name, pages in
            guard let context else { return SQLITE_OK }
            Unmanaged<WALCheckpoints>.fromOpaque(context).takeUnretainedValue().committed(pages: pages, connection: connection, name: name)
            return SQLITE_OK
        }, context)
    }

    /// On the writer's connection, after a commit, with `pages` in the WAL. Yielding to the stream only queues a
    /// wake-up for its reader: nothing runs here that could call back into this connection.
    private func committed(pages count: Int32, connection: OpaquePointer?, name: UnsafePointer<CChar>?) {
        if count >= pages.ceiling {
            // Nobody checkpointed in time: the writer does, as SQLite's auto-checkpoint would have.
            sqlite3_wal_checkpoint_v2(connection, name, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            writerCheckpointed.add(1, ordering: .relaxed)
        } else if count >= pages.signal {
            grew.yield()
        }
    }

    /// A PASSIVE checkpoint on the checkpointer's connection: copies what no reader still needs into the database
    /// file and syncs it. Blocks (two fdatasyncs): call it off the cooperative pool.
    func checkpoint() throws -> (walFrames: Int, checkpointed: Int) {
        try checkpointer.writeWithoutTransaction { db in
            let result = try db.checkpoint(.passive)
            return (result.walFrameCount, result.checkpointedFrameCount)
        }
    }
}
