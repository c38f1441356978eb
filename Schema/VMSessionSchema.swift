import Foundation

/// The daemon's contracts, kept as files at the top of the repository so that they are read and reviewed as
/// files: the SQLite migrations (`sqlite/*.sql`, applied in file-name order). This module only makes
/// them available to the code at run time.
public enum VMSessionSchema {
    /// The migration files, oldest first.
    public static func migrationFiles() throws -> [URL] {
        guard let folder = Bundle.module.url(forResource: "sqlite", withExtension: nil) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "the schema migrations are missing"])
        }
        let files = try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
        return files.filter { $0.pathExtension == "sql" }.sorted { $0.lastPathComponent < $1.lastPathComponent }
    }
}
