import Foundation
import GRDB
import VMSessionCore

struct HostRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "hosts"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    var name: String
    var uri: String
    var labels: String
    var maxSessions: Int?
    var draining: Bool
    var source: String
    var createdAt: Date

    init(_ host: HostDefinition, createdAt: Date) {
        name = host.name
        uri = host.uri
        let data = (try? JSONEncoder.sortedKeys.encode(host.labels)) ?? Data("{}".utf8)
        labels = String(decoding: data, as: UTF8.self)
        maxSessions = host.maxSessions
        draining = host.draining
        source = host.source.rawValue
        self.createdAt = createdAt.millisecondPrecision
    }

    var definition: HostDefinition? {
        guard let source = HostDefinition.Source(rawValue: source),
            let labels = try? JSONDecoder().decode([String: String].self, from: Data(labels.utf8))
        else { return nil }
        return HostDefinition(name: name, uri: uri, labels: labels, maxSessions: maxSessions, draining: draining, source: source)
    }
}

extension JSONEncoder {
    static let sortedKeys: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()
}

extension SessionStore {
    /// Every host, by name.
    public func hosts() throws -> [HostDefinition] {
        try read { db in try HostRow.order(Column("name")).fetchAll(db).compactMap(\.definition) }
    }

    /// Adds a host; `invalid_state` if one has that name.
    public func addHost(_ host: HostDefinition, at time: Date) throws {
        try write { db in
            if try HostRow.fetchOne(db, key: host.name) != nil {
                throw VMSessionError(.invalidState, "There is already a host named '\(host.name)'.")
            }
            try HostRow(host, createdAt: time).insert(db)
        }
    }

    /// Inserts or replaces a host, keeping its creation time (and, with `keepDraining`, its draining flag).
    public func saveHost(_ host: HostDefinition, at time: Date, keepDraining: Bool = false) throws {
        try write { db in
            let existing = try HostRow.fetchOne(db, key: host.name)
            var row = HostRow(host, createdAt: existing?.createdAt ?? time)
            if keepDraining, let existing { row.draining = existing.draining }
            try row.save(db)
        }
    }

    /// Sets a host's draining flag; false if there is no such host.
    @discardableResult
    public func setHostDraining(_ name: String, _ draining: Bool) throws -> Bool {
        try write { db in
            try HostRow.filter(Column("name") == name).updateAll(db, Column("draining").set(to: draining)) > 0
        }
    }

    /// Deletes a host's row; false if there was none.
    @discardableResult
    public func deleteHost(_ name: String) throws -> Bool {
        try write { db in try HostRow.deleteOne(db, key: name) }
    }
}
