import Foundation
import GRDB
import VMSessionCore
import VMSessionSchema

/// vmsessiond's database: sessions, tokens, operations and the event history in one SQLite file (WAL mode,
/// synchronous=NORMAL: see ``init(path:)``).
///
/// Migrations are the `.sql` files of `Schema/sqlite`, applied in file-name order when the store opens.
/// Each method is one transaction, so a state change and the events announcing it land together or not at all.
public final class SessionStore: Sendable {
    private let writer: any DatabaseWriter
    /// The file's WAL checkpoints, taken off the commits (nil in memory).
    private let wal: WALCheckpoints?

    /// Opens (creating if needed) the database file at `path` and brings its schema up to date.
    public convenience init(path: String) throws {
        try self.init(path: path, checkpointPages: WALCheckpoints.Pages())
    }

    /// As ``init(path:)``, with the WAL sizes at which the writer asks for a checkpoint, and does one itself.
    convenience init(path: String, checkpointPages: WALCheckpoints.Pages) throws {
        var configuration = Configuration()
        configuration.foreignKeysEnabled = true
        configuration.busyMode = .timeout(5)
        // WAL with synchronous=NORMAL: a commit is written to the WAL (the OS has it, so a kill -9 of the daemon
        // loses nothing: the intent written before libvirt is asked is there for reconciliation) but not
        // fsynced; the WAL is synced at checkpoints, which run beside the writer (``WALCheckpoints``). A power
        // loss can lose the last commits, never corrupt the file, and takes the VMs down with it, so
        // reconciliation then finds them stopped either way. The fsync per commit (FULL, SQLite's default) was
        // most of what a pause or resume cost over libvirt.
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        let pool: DatabasePool
        let wal: WALCheckpoints
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            // Once the file is in WAL mode: a connection opened before would not see its WAL.
            wal = try WALCheckpoints(path: path, pages: checkpointPages)
            // The pool's one writer connection, kept for the pool's life: the only one that commits.
            pool.writeWithoutTransaction { db in wal.install(on: db) }
        } catch {
            throw VMSessionError(.ioError, "Cannot open the database at \(path).", cause: error)
        }
        try self.init(writer: pool, wal: wal)
    }

    /// A private in-memory database, for tests.
    public static func inMemory() throws -> SessionStore {
        var configuration = Configuration()
        configuration.foreignKeysEnabled = true
        return try SessionStore(writer: DatabaseQueue(configuration: configuration), wal: nil)
    }

    init(writer: any DatabaseWriter, wal: WALCheckpoints?) throws {
        self.writer = writer
        self.wal = wal
        do {
            try Self.migrator().migrate(writer)
        } catch {
            throw VMSessionError(.ioError, "Cannot bring the database schema up to date.", cause: error)
        }
    }

    static func migrator() throws -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        for file in try VMSessionSchema.migrationFiles() {
            let sql = try String(contentsOf: file, encoding: .utf8)
            migrator.registerMigration(file.deletingPathExtension().lastPathComponent) { db in
                try db.execute(sql: sql)
            }
        }
        return migrator
    }

    // MARK: Checkpoints

    /// A signal each time the WAL has grown enough to be checkpointed (at most one waits); the daemon's
    /// checkpointer answers each with ``checkpoint()``. Ends at once for an in-memory store.
    public var walGrowth: AsyncStream<Void> {
        guard let wal else { return AsyncStream { $0.finish() } }
        return wal.growth
    }

    /// Copies the WAL into the database file and syncs it, beside the writer (a PASSIVE checkpoint on a
    /// connection of its own). Returns the WAL's frames and how many of them are now in the file. Blocks on the
    /// disk: call it off the cooperative pool.
    @discardableResult
    public func checkpoint() throws -> (walFrames: Int, checkpointed: Int) {
        guard let wal else { return (0, 0) }
        do { return try wal.checkpoint() } catch {
            throw VMSessionError(.ioError, "Cannot checkpoint the database's write-ahead log.", cause: error)
        }
    }

    /// How many times a commit checkpointed the WAL itself because it reached its ceiling before the checkpointer
    /// ran (each made that commit pay for the copy and the syncs); 0 in memory.
    public var writerCheckpoints: Int { wal?.writerCheckpoints ?? 0 }

    /// The names of the migrations applied to this database, oldest first.
    public func appliedMigrations() throws -> [String] {
        try writer.read { db in try Self.migrator().appliedMigrations(db) }
    }

    // MARK: Sessions

    /// Inserts a new session with its first token. Fails with `invalid_state` if the name is taken.
    public func createSession(_ stored: StoredSession, tokenHash: [UInt8], event: (SessionEvent.Kind, String)) throws -> SessionEvent {
        try write { db in
            if try SessionRow.filter(Column("name") == stored.session.name).fetchCount(db) > 0 {
                throw VMSessionError(.invalidState, "A session named '\(stored.session.name)' already exists.")
            }
            try SessionRow(stored).insert(db)
            try TokenRow(tokenHash: Data(tokenHash), sessionId: stored.session.id.description, createdAt: stored.session.createdAt).insert(db)
            return try Self.append(event.0, event.1, for: stored.session.id, at: stored.session.createdAt, in: db)
        }
    }

    public func session(_ id: SessionID) throws -> StoredSession? {
        try read { db in try SessionRow.fetchOne(db, key: id.description)?.stored() }
    }

    public func session(named name: String) throws -> StoredSession? {
        try read { db in try SessionRow.filter(Column("name") == name).fetchOne(db)?.stored() }
    }

    public func allSessions() throws -> [StoredSession] {
        try read { db in try SessionRow.order(Column("created_at")).fetchAll(db).map { try $0.stored() } }
    }

    /// Saves a session, optionally an operation, and appends events, in one transaction. Returns the
    /// events with their ids.
    @discardableResult
    public func update(
        _ stored: StoredSession, operation: SessionOperation? = nil, events: [(SessionEvent.Kind, String)] = []
    ) throws -> [SessionEvent] {
        try write { db in
            try SessionRow(stored).update(db)
            if let operation { try OperationRow(operation).save(db) }
            return try events.map { try Self.append($0.0, $0.1, for: stored.session.id, at: stored.session.updatedAt, in: db) }
        }
    }

    // MARK: Tokens

    public func addToken(hash: [UInt8], for id: SessionID, at time: Date) throws {
        try write { db in try TokenRow(tokenHash: Data(hash), sessionId: id.description, createdAt: time).insert(db) }
    }

    /// Every token hash with the session it opens (the daemon keeps them in memory for its hot path).
    public func allTokens() throws -> [(hash: [UInt8], session: SessionID)] {
        try read { db in
            try TokenRow.fetchAll(db).compactMap { row in SessionID(row.sessionId).map { (Array(row.tokenHash), $0) } }
        }
    }

    /// Removes every token of a session, or just one (by its hash). Returns how many went.
    @discardableResult
    public func revokeTokens(of id: SessionID, hash: [UInt8]? = nil) throws -> Int {
        try write { db in
            var request = TokenRow.filter(Column("session_id") == id.description)
            if let hash { request = request.filter(Column("token_hash") == Data(hash)) }
            return try request.deleteAll(db)
        }
    }

    // MARK: Operations

    public func save(_ operation: SessionOperation) throws {
        try write { db in try OperationRow(operation).save(db) }
    }

    public func operation(_ id: OperationID) throws -> SessionOperation? {
        try read { db in try OperationRow.fetchOne(db, key: id.description)?.operation() }
    }

    // MARK: Events

    /// Appends one event and returns it with its id.
    public func append(_ kind: SessionEvent.Kind, payload: String, for id: SessionID, at time: Date) throws -> SessionEvent {
        try write { db in try Self.append(kind, payload, for: id, at: time, in: db) }
    }

    /// Appends the same event to several sessions' streams in one transaction (a daemon-wide change that
    /// concerns each of them, such as `idleChanged`).
    public func append(_ kind: SessionEvent.Kind, payload: String, forEach ids: [SessionID], at time: Date) throws -> [SessionEvent] {
        try write { db in try ids.map { try Self.append(kind, payload, for: $0, at: time, in: db) } }
    }

    /// Events after `afterID` (exclusive), oldest first, for one session or all.
    public func events(for id: SessionID?, after afterID: Int64, limit: Int = 10_000) throws -> [SessionEvent] {
        try read { db in
            var request = EventRow.filter(Column("id") > afterID)
            if let id { request = request.filter(Column("session_id") == id.description) }
            return try request.order(Column("id")).limit(limit).fetchAll(db).compactMap { $0.event() }
        }
    }

    /// Events after `afterID` (exclusive), oldest first, of any of `ids` (nil: all): the replay of one stream
    /// that follows several sessions.
    public func events(forAny ids: Set<SessionID>?, after afterID: Int64, limit: Int = 10_000) throws -> [SessionEvent] {
        guard let ids else { return try events(for: nil, after: afterID, limit: limit) }
        if ids.count == 1, let id = ids.first { return try events(for: id, after: afterID, limit: limit) }
        return try read { db in
            try EventRow.filter(Column("id") > afterID).filter(ids.map(\.description).contains(Column("session_id")))
                .order(Column("id")).limit(limit).fetchAll(db).compactMap { $0.event() }
        }
    }

    static func append(
        _ kind: SessionEvent.Kind, _ payload: String, for id: SessionID, at time: Date, in db: Database
    ) throws -> SessionEvent {
        // Stored with milliseconds: the event sent live carries the very instant a replay reads back.
        var row = EventRow(id: nil, sessionId: id.description, kind: kind.rawValue, payload: payload, createdAt: time.millisecondPrecision)
        try row.insert(db)
        guard let event = row.event() else { throw VMSessionError(.internalError, "An event could not be stored.") }
        return event
    }

    // MARK: Settings

    /// A daemon-wide setting (the `settings` table), or nil if it was never set.
    public func setting(_ key: String) throws -> String? {
        try read { db in try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = ?", arguments: [key]) }
    }

    public func setSetting(_ key: String, to value: String) throws {
        try write { db in
            try db.execute(
                sql: "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                arguments: [key, value])
        }
    }

    // MARK: Access

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try writer.read(body) } catch let error as VMSessionError { throw error } catch {
            throw VMSessionError(.ioError, "Reading the database failed.", cause: error)
        }
    }

    func write<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try writer.write(body) } catch let error as VMSessionError { throw error } catch {
            throw VMSessionError(.ioError, "Writing the database failed.", cause: error)
        }
    }
}
