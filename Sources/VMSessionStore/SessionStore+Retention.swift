import Foundation
import GRDB
import VMSessionCore

/// Pruning: what ``RetentionPolicy`` lets go. Each method is one transaction.
extension SessionStore {
    /// The stream name of the daemon-wide event stream in `event_watermarks`.
    static let allStreams = "*"

    /// Deletes events beyond the newest `keepPerSession` of each session and events older than `cutoff`,
    /// and raises each stream's watermark to the highest id deleted from it. Returns how many went.
    @discardableResult
    public func pruneEvents(keepPerSession: Int, olderThan cutoff: Date) throws -> Int {
        try write { db in
            let doomed = try Row.fetchAll(
                db,
                sql: """
                    SELECT session_id, MAX(id) AS last FROM events e
                    WHERE created_at < :cutoff
                       OR id <= (SELECT id FROM events WHERE session_id = e.session_id ORDER BY id DESC LIMIT 1 OFFSET :keep)
                    GROUP BY session_id
                    """,
                arguments: ["cutoff": StorageDate.text(cutoff), "keep": keepPerSession])
            var deleted = 0
            var highest: Int64 = 0
            for row in doomed {
                let session: String = row["session_id"]
                let last: Int64 = row["last"]
                try db.execute(sql: "DELETE FROM events WHERE session_id = ? AND id <= ?", arguments: [session, last])
                deleted += db.changesCount
                try Self.raiseWatermark(session, to: last, in: db)
                highest = max(highest, last)
            }
            if highest > 0 { try Self.raiseWatermark(Self.allStreams, to: highest, in: db) }
            return deleted
        }
    }

    /// The highest event id pruned from a session's stream (nil: the daemon-wide one); 0 if none was.
    public func prunedThrough(_ id: SessionID?) throws -> Int64 {
        try read { db in
            try Int64.fetchOne(
                db, sql: "SELECT pruned_through FROM event_watermarks WHERE stream = ?",
                arguments: [id?.description ?? Self.allStreams]) ?? 0
        }
    }

    /// The highest event id pruned from any of these sessions' streams (nil: the daemon-wide one); 0 if none was.
    public func prunedThrough(anyOf ids: Set<SessionID>?) throws -> Int64 {
        guard let ids else { return try prunedThrough(nil) }
        guard !ids.isEmpty else { return 0 }
        let placeholders = Array(repeating: "?", count: ids.count).joined(separator: ",")
        return try read { db in
            try Int64.fetchOne(
                db, sql: "SELECT MAX(pruned_through) FROM event_watermarks WHERE stream IN (\(placeholders))",
                arguments: StatementArguments(ids.map(\.description))) ?? 0
        }
    }

    /// Deletes finished operations last updated before `cutoff` (never one a session still points at).
    @discardableResult
    public func pruneOperations(finishedBefore cutoff: Date) throws -> Int {
        try write { db in
            try db.execute(
                sql: """
                    DELETE FROM operations WHERE status != 'running' AND updated_at < ?
                      AND id NOT IN (SELECT operation_id FROM sessions WHERE operation_id IS NOT NULL)
                    """,
                arguments: [StorageDate.text(cutoff)])
            return db.changesCount
        }
    }

    /// Deletes each session's tokens beyond its newest `keepPerSession`; returns the hashes that went, with
    /// their sessions, so that the daemon can forget them and end their streams.
    public func pruneTokens(keepPerSession: Int) throws -> [(hash: [UInt8], session: SessionID)] {
        try write { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT token_hash, session_id FROM (
                        SELECT token_hash, session_id,
                               ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY created_at DESC, rowid DESC) AS rank
                        FROM session_tokens)
                    WHERE rank > ?
                    """,
                arguments: [keepPerSession])
            var removed: [(hash: [UInt8], session: SessionID)] = []
            for row in rows {
                let hash: Data = row["token_hash"]
                let session: String = row["session_id"]
                try db.execute(sql: "DELETE FROM session_tokens WHERE token_hash = ?", arguments: [hash])
                if let id = SessionID(session) { removed.append((Array(hash), id)) }
            }
            return removed
        }
    }

    /// Deletes a session with its tokens, operations, properties and events; its name is free again. The
    /// daemon-wide stream's watermark rises past its events, so that a replay says they are gone.
    @discardableResult
    public func deleteSession(_ id: SessionID) throws -> Bool {
        try write { db in
            let last = try Int64.fetchOne(db, sql: "SELECT MAX(id) FROM events WHERE session_id = ?", arguments: [id.description])
            try db.execute(sql: "DELETE FROM events WHERE session_id = ?", arguments: [id.description])
            try db.execute(sql: "DELETE FROM event_watermarks WHERE stream = ?", arguments: [id.description])
            if let last { try Self.raiseWatermark(Self.allStreams, to: last, in: db) }
            return try SessionRow.deleteOne(db, key: id.description)
        }
    }

    /// Forgets pending origins last seen before `cutoff`. Returns how many went.
    @discardableResult
    public func prunePendingOrigins(lastSeenBefore cutoff: Date) throws -> Int {
        try write { db in
            try db.execute(sql: "DELETE FROM origins WHERE status = 'pending' AND last_seen < ?", arguments: [StorageDate.text(cutoff)])
            return db.changesCount
        }
    }

    private static func raiseWatermark(_ stream: String, to id: Int64, in db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO event_watermarks (stream, pruned_through) VALUES (?, ?)
                ON CONFLICT(stream) DO UPDATE SET pruned_through = MAX(pruned_through, excluded.pruned_through)
                """,
            arguments: [stream, id])
    }
}
