import Crypto
import Foundation
import VMSessionCore

/// SHA-256 of a file, read in chunks so that a multi-gigabyte image never sits in memory.
enum FileDigest {
    static let chunkBytes = 1 << 20

    /// The lowercase hex SHA-256 of the file at `path`; `not_found` / `io_error` if it cannot be read.
    static func sha256(ofFile path: String) throws(VMSessionError) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw VMSessionError(.notFound, "Cannot read the file \(path): it is missing or not readable.")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        do {
            while let chunk = try handle.read(upToCount: chunkBytes), !chunk.isEmpty {
                hasher.update(data: chunk)
            }
        } catch {
            throw VMSessionError(.ioError, "Reading \(path) failed.", cause: error)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Whether `text` is a SHA-256 in hex (64 digits, either case).
    static func isHexDigest(_ text: String) -> Bool {
        text.utf8.count == 64 && text.allSatisfy(\.isHexDigit)
    }
}
