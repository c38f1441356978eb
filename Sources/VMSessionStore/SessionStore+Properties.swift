import Foundation
import GRDB
import VMSessionCore

struct PropertyRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "session_properties"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    var sessionId: String
    var name: String
    var value: String
}

extension SessionStore {
    /// The guest properties of a session (the plugin's setProperty/getProperty), by name.
    public func properties(of id: SessionID) throws -> [String: String] {
        try read { db in
            let rows = try PropertyRow.filter(Column("session_id") == id.description).fetchAll(db)
            return Dictionary(rows.map { ($0.name, $0.value) }, uniquingKeysWith: { _, last in last })
        }
    }

    /// Sets a property and appends its event in one transaction.
    public func setProperty(_ name: String, to value: String, of id: SessionID, event: (SessionEvent.Kind, String), at time: Date) throws -> SessionEvent {
        try write { db in
            try PropertyRow(sessionId: id.description, name: name, value: value).save(db)
            return try Self.append(event.0, event.1, for: id, at: time, in: db)
        }
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
}
