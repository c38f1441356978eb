import Foundation
import GRDB
import VMSessionCore

struct ImageRow: Codable, FetchableRecord, PersistableRecord, StorageDated {
    static let databaseTableName = "images"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    var version: String
    var format: String
    var path: String
    var sha256: String
    var url: String?
    var size: Int64?
    var state: String
    var addedAt: Date
    var identity: String?

    init(_ record: ImageRecord) {
        version = record.version
        format = record.format.rawValue
        path = record.path
        sha256 = record.sha256
        url = record.url
        size = record.size
        state = record.state.rawValue
        addedAt = record.addedAt
        identity = record.identity
    }

    func record() -> ImageRecord? {
        guard let format = ImageRecord.Format(rawValue: format), let state = ImageRecord.State(rawValue: state) else { return nil }
        return ImageRecord(
            version: version, format: format, path: path, sha256: sha256, url: url, size: size, state: state, addedAt: addedAt,
            identity: identity)
    }
}

extension SessionStore {
    public func allImages() throws -> [ImageRecord] {
        try read { db in try ImageRow.order(Column("version")).fetchAll(db).compactMap { $0.record() } }
    }

    public func image(_ version: String) throws -> ImageRecord? {
        try read { db in try ImageRow.fetchOne(db, key: version)?.record() }
    }

    /// Adds an image; `invalid_state` if the version is taken (an image is replaced by removing it first).
    public func addImage(_ record: ImageRecord) throws {
        try write { db in
            if try ImageRow.fetchOne(db, key: record.version) != nil {
                throw VMSessionError(.invalidState, "An image with version '\(record.version)' exists; remove it first.")
            }
            try ImageRow(record).insert(db)
        }
    }

    /// Saves an image that exists (after its download, for instance).
    public func updateImage(_ record: ImageRecord) throws {
        try write { db in try ImageRow(record).update(db) }
    }

    @discardableResult
    public func removeImage(_ version: String) throws -> Bool {
        try write { db in try ImageRow.deleteOne(db, key: version) }
    }
}
