import Foundation
import VMSessionCore

/// The daemon's admin token: it approves origins, sees every session and changes daemon-wide settings.
/// Kept in a file only the daemon's user can read (like Jupyter's), so that local programs of that user
/// (`vmsessionctl`, the daemon's own page opened by the user) can act as admin and web pages cannot.
public struct AdminToken: Sendable {
    /// The token's hash; the token itself stays in the file.
    public let hash: [UInt8]
    public let path: String

    /// Reads the token from `<stateDirectory>/admin-token`, creating it (mode 0600) if it is missing.
    public static func load(stateDirectory: String) throws(VMSessionError) -> AdminToken {
        let path = stateDirectory + "/admin-token"
        let manager = FileManager.default
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if token.count >= 32 {
                try? manager.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
                return AdminToken(hash: SecretHasher.tokenHash(token), path: path)
            }
        }
        let (token, hash) = SecretHasher.mintToken()
        guard manager.createFile(atPath: path, contents: Data((token + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw VMSessionError(.ioError, "Cannot write the admin token to \(path).")
        }
        return AdminToken(hash: hash, path: path)
    }

    /// Whether `token` is the admin token (compared by hash, in constant time).
    public func matches(_ token: String) -> Bool {
        let candidate = SecretHasher.tokenHash(token)
        var difference: UInt8 = 0
        for (a, b) in zip(candidate, hash) { difference |= a ^ b }
        return difference == 0 && candidate.count == hash.count
    }
}
