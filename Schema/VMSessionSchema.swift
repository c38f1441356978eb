import Foundation

/// The daemon's contracts, kept as files at the top of the repository so that they are read and reviewed as
/// files: the SQLite migrations (`sqlite/*.sql`, applied in file-name order) and the HTTP API
/// (`openapi.yaml`). This module only makes them available to the code at run time.
public enum VMSessionSchema {
    /// The migration files, oldest first.
    public static func migrationFiles() throws -> [URL] {
        let folder = try resource("sqlite", missing: "the schema migrations are missing")
        let files = try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
        return files.filter { $0.pathExtension == "sql" }.sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    /// The OpenAPI 3.1 document of the HTTP API, as the file's bytes (YAML).
    public static func openAPIDocument() throws -> Data {
        try Data(contentsOf: resource("openapi.yaml", missing: "the OpenAPI document is missing"))
    }

    private static func resource(_ name: String, missing: String) throws -> URL {
        guard let url = Bundle.module.url(forResource: name, withExtension: nil) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: missing])
        }
        return url
    }
}
