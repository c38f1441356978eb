import Foundation
import GRDB
import VMSessionCore

/// A template as the store keeps it: the template and how far it got.
public struct StoredTemplate: Equatable, Sendable {
    /// Written before the hypervisor is touched (`creating`, `deleting`) and confirmed after (`ready`, or gone).
    public enum Status: String, Sendable { case creating, ready, deleting }

    public var template: VMTemplate
    public var status: Status

    public init(template: VMTemplate, status: Status) {
        self.template = template
        self.status = status
    }
}

struct TemplateRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "templates"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    var name: String
    var fromSession: String
    var baseVersion: String
    var cpus: Int
    var memory: Int
    var disk: Int
    var bytes: Int64
    var status: String
    var createdAt: Date
    var host: String

    init(_ stored: StoredTemplate) {
        let template = stored.template
        name = template.name
        fromSession = template.fromSession.description
        baseVersion = template.baseVersion
        cpus = template.cpus
        memory = template.memory
        disk = template.disk
        bytes = template.bytes
        status = stored.status.rawValue
        createdAt = template.createdAt.millisecondPrecision
        host = template.host
    }

    func stored(users: [SessionID]) -> StoredTemplate? {
        guard let source = SessionID(fromSession), let status = StoredTemplate.Status(rawValue: status) else { return nil }
        return StoredTemplate(
            template: VMTemplate(
                name: name, createdAt: createdAt, fromSession: source, baseVersion: baseVersion, cpus: cpus, memory: memory, disk: disk,
                bytes: bytes, sessions: users, host: host),
            status: status)
    }
}

struct TemplateSessionRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "template_sessions"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    var sessionId: String
    var template: String
    var hasRun: Bool
}

extension SessionStore {
    /// Every template, by name, whatever its status, with the sessions that use it.
    public func templates() throws -> [StoredTemplate] {
        try read { db in
            let users = Dictionary(grouping: try TemplateSessionRow.fetchAll(db), by: \.template)
            return try TemplateRow.order(Column("name")).fetchAll(db).compactMap { row in
                row.stored(users: (users[row.name] ?? []).compactMap { SessionID($0.sessionId) })
            }
        }
    }

    /// Inserts or updates a template's row.
    public func save(_ template: StoredTemplate) throws {
        try write { db in try TemplateRow(template).save(db) }
    }

    /// Deletes a template's row (the database refuses while sessions use it).
    public func deleteTemplate(_ name: String) throws {
        try write { db in _ = try TemplateRow.deleteOne(db, key: name) }
    }

    /// The template session `id` was opened from, and whether its VM ran since; nil if it was not.
    public func templateUse(of id: SessionID) throws -> (template: String, hasRun: Bool)? {
        try read { db in
            try TemplateSessionRow.fetchOne(db, key: id.description).map { ($0.template, $0.hasRun) }
        }
    }

    /// Records that session `id` uses `template` (nil: none any more).
    public func setTemplateUse(of id: SessionID, template: String?, hasRun: Bool = false) throws {
        try write { db in
            if let template {
                try TemplateSessionRow(sessionId: id.description, template: template, hasRun: hasRun).save(db)
            } else {
                _ = try TemplateSessionRow.deleteOne(db, key: id.description)
            }
        }
    }
}
