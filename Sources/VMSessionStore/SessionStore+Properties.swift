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
}
