import Foundation
import GRDB
import VMSessionCore

/// A snapshot as the store keeps it: the snapshot, whose session and client, and how far it got.
public struct StoredSnapshot: Equatable, Sendable {
    /// Written before libvirt is touched (`creating`, `deleting`) and confirmed after (`ready`, or gone).
    public enum Status: String, Sendable { case creating, ready, deleting }

    public var session: SessionID
    public var client: String
    public var snapshot: VMSnapshot
    public var status: Status

    public init(session: SessionID, client: String, snapshot: VMSnapshot, status: Status) {
        self.session = session
        self.client = client
        self.snapshot = snapshot
        self.status = status
    }
}

struct SnapshotRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "session_snapshots"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    var sessionId: String
    var name: String
    var client: String
    var vmState: String
    var bytes: Int64
    var status: String
    var createdAt: Date

    init(_ stored: StoredSnapshot) {
        sessionId = stored.session.description
        name = stored.snapshot.name
        client = stored.client
        vmState = stored.snapshot.state.rawValue
        bytes = stored.snapshot.bytes
        status = stored.status.rawValue
        createdAt = stored.snapshot.createdAt.millisecondPrecision
    }

    func stored() -> StoredSnapshot? {
        guard let session = SessionID(sessionId), let state = SessionState(rawValue: vmState), let status = StoredSnapshot.Status(rawValue: status)
        else { return nil }
        return StoredSnapshot(
            session: session, client: client, snapshot: VMSnapshot(name: name, createdAt: createdAt, state: state, bytes: bytes),
            status: status)
    }
}

extension SessionStore {
    /// The snapshots of one session (nil: of every session), oldest first, whatever their status.
    public func snapshots(of id: SessionID?) throws -> [StoredSnapshot] {
        try read { db in
            var request = SnapshotRow.order(Column("created_at"), Column("name"))
            if let id { request = request.filter(Column("session_id") == id.description) }
            return try request.fetchAll(db).compactMap { $0.stored() }
        }
    }

    /// Inserts or updates a snapshot, and appends events, in one transaction.
    @discardableResult
    public func save(_ snapshot: StoredSnapshot, events: [(SessionEvent.Kind, String)] = [], at time: Date = Date()) throws -> [SessionEvent] {
        try write { db in
            try SnapshotRow(snapshot).save(db)
            return try events.map { try Self.append($0.0, $0.1, for: snapshot.session, at: time, in: db) }
        }
    }

    /// Deletes a snapshot's row, and appends events, in one transaction.
    @discardableResult
    public func deleteSnapshot(_ name: String, of id: SessionID, events: [(SessionEvent.Kind, String)] = [], at time: Date = Date()) throws
        -> [SessionEvent]
    {
        try write { db in
            try SnapshotRow.filter(Column("session_id") == id.description && Column("name") == name).deleteAll(db)
            return try events.map { try Self.append($0.0, $0.1, for: id, at: time, in: db) }
        }
    }
}
