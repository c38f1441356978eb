import Foundation
import VMSessionCore
import VMSessionStore

/// A store's database file in a directory of its own, removed with everything SQLite put beside it (its WAL and
/// the WAL's index), and a way to grow the WAL: what the store's and the daemon's checkpoint tests share.
public final class StoreFile {
    let directory: TemporaryDirectory
    public var path: String { directory.path + "/db.sqlite" }

    public init() throws { directory = try TemporaryDirectory("vms-store-file") }

    /// The database file's size: it grows only when a checkpoint copies the WAL into it.
    public var databaseBytes: Int { ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0 }

    /// `count` commits of a property of about 1 KiB, to a session made for them: a few WAL pages each (600 make
    /// about 1500, past SQLite's own checkpoint threshold of 1000).
    public static func commitProperties(_ count: Int, to store: SessionStore, session name: String = "wal") throws {
        let now = Date()
        let session = Session(id: SessionID(), name: name, createdAt: now, updatedAt: now)
        _ = try store.createSession(
            StoredSession(session: session, secret: SecretDigest(kdf: "scrypt:16384:8:1", salt: [1], hash: [2])), tokenHash: Array(name.utf8),
            event: (.sessionCreated, "{}"))
        let value = String(repeating: "x", count: 1000)
        for index in 0..<count {
            _ = try store.setProperty("p\(index % 50)", to: value + "\(index)", of: session.id, event: (.propertyChanged, "{}"), at: Date())
        }
    }
}
