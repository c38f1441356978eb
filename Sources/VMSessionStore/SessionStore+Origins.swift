import Foundation
import GRDB
import VMSessionCore

struct OriginRow: Codable, FetchableRecord, PersistableRecord, StorageDated {
    static let databaseTableName = "origins"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    var origin: String
    var status: String
    var firstSeen: Date
    var lastSeen: Date
    var decidedAt: Date?
    var requests: Int
    var privileged: Bool
    var egress: String?
    /// A JSON object of strings.
    var hostLabels: String

    init(_ record: OriginRecord) {
        privileged = record.privileged
        hostLabels = Self.encode(record.hostLabels)
        egress = record.egress?.rawValue
        origin = record.origin.value
        status = record.status.rawValue
        firstSeen = record.firstSeen
        lastSeen = record.lastSeen
        decidedAt = record.decidedAt
        requests = record.requests
    }

    func record() -> OriginRecord? {
        guard let origin = WebOrigin(origin), let status = WebOrigin.Status(rawValue: status) else { return nil }
        return OriginRecord(
            origin: origin, status: status, firstSeen: firstSeen, lastSeen: lastSeen, decidedAt: decidedAt, requests: requests,
            privileged: privileged, egress: egress.flatMap(EgressPolicy.init(rawValue:)),
            hostLabels: (try? JSONDecoder().decode([String: String].self, from: Data(hostLabels.utf8))) ?? [:])
    }

    static func encode(_ labels: [String: String]) -> String {
        String(decoding: (try? JSONEncoder.sortedKeys.encode(labels)) ?? Data("{}".utf8), as: UTF8.self)
    }
}

extension SessionStore {
    public func allOrigins() throws -> [OriginRecord] {
        try read { db in try OriginRow.order(Column("first_seen")).fetchAll(db).compactMap { $0.record() } }
    }

    /// Notes `count` refused requests from an origin that is not approved, the last at `time`, creating it
    /// as pending if it is new.
    @discardableResult
    public func noteRefused(_ origin: WebOrigin, at time: Date, count: Int = 1) throws -> OriginRecord {
        try write { db in
            var row = try OriginRow.fetchOne(db, key: origin.value)
                ?? OriginRow(OriginRecord(origin: origin, status: .pending, firstSeen: time, lastSeen: time))
            row.lastSeen = time
            row.requests += count
            try row.save(db)
            guard let record = row.record() else { throw VMSessionError(.internalError, "An origin could not be stored.") }
            return record
        }
    }

    /// Records the user's decision about an origin (creating it if it never asked); only an approved origin
    /// can be privileged, have an egress policy of its own, or be restricted to hosts with labels.
    @discardableResult
    public func decide(
        _ origin: WebOrigin, _ status: WebOrigin.Status, privileged: Bool = false, egress: EgressPolicy? = nil,
        hostLabels: [String: String] = [:], at time: Date
    ) throws -> OriginRecord {
        try write { db in
            var row = try OriginRow.fetchOne(db, key: origin.value)
                ?? OriginRow(OriginRecord(origin: origin, status: status, firstSeen: time, lastSeen: time))
            row.status = status.rawValue
            row.privileged = status == .approved && privileged
            row.egress = status == .approved ? egress?.rawValue : nil
            row.hostLabels = OriginRow.encode(status == .approved ? hostLabels : [:])
            row.decidedAt = time
            try row.save(db)
            guard let record = row.record() else { throw VMSessionError(.internalError, "An origin could not be stored.") }
            return record
        }
    }

    /// Forgets an origin entirely; it is unknown (and will be pending again on its next request).
    public func forget(_ origin: WebOrigin) throws -> Bool {
        try write { db in try OriginRow.deleteOne(db, key: origin.value) }
    }
}
