import Foundation

/// A disk image in the catalog, as stored: what it is called, where its file is (or will be), and the
/// checksum that file must have. It exists so that a `version` names something verifiable, not just a path.
public struct ImageRecord: Codable, Equatable, Sendable {
    /// How the image's bytes are laid out; the session overlay names it as its backing format.
    public enum Format: String, Codable, Sendable, CaseIterable {
        case qcow2, raw
    }

    /// `remote`: registered with a URL and not downloaded yet; `available`: the file is there and verified.
    public enum State: String, Codable, Sendable {
        case available, remote
    }

    public var version: String
    public var format: Format
    public var path: String
    /// Lowercase hex SHA-256 of the file.
    public var sha256: String
    public var url: String?
    /// Bytes, once known.
    public var size: Int64?
    public var state: State
    public var addedAt: Date
    /// The file as it was verified (device, inode, size, modification and change times), re-checked by
    /// descriptor at each use; nil until the file is there (and for images stored before it was kept).
    public var identity: String?

    public init(
        version: String, format: Format, path: String, sha256: String, url: String? = nil, size: Int64? = nil,
        state: State, addedAt: Date, identity: String? = nil
    ) {
        self.identity = identity
        self.version = version
        self.format = format
        self.path = path
        self.sha256 = sha256
        self.url = url
        self.size = size
        self.state = state
        self.addedAt = addedAt
    }
}
