import Crypto
import CryptoExtras
import Foundation
import VMSessionCore
import VMSessionStore

/// Turns session secrets into digests that are safe to keep (scrypt, memory-hard) and checks a secret
/// against one in constant time. Also mints the random bearer tokens handed to session owners.
public struct SecretHasher: Sendable {
    /// scrypt cost: N = 2^14, r = 8, p = 1 (16 MiB, tens of milliseconds), the common interactive setting.
    public var rounds = 1 << 14
    public var blockSize = 8
    public var parallelism = 1

    public init() {}

    var kdfName: String { "scrypt:\(rounds):\(blockSize):\(parallelism)" }

    /// A new digest of `secret` with a fresh random salt.
    public func digest(of secret: String) async throws(VMSessionError) -> SecretDigest {
        let salt = Self.randomBytes(16)
        let hash = try await derive(secret, salt: salt, kdf: kdfName)
        return SecretDigest(kdf: kdfName, salt: salt, hash: hash)
    }

    /// Whether `secret` produces `digest`, compared in constant time.
    public func verify(_ secret: String, against digest: SecretDigest) async throws(VMSessionError) -> Bool {
        let hash = try await derive(secret, salt: digest.salt, kdf: digest.kdf)
        guard hash.count == digest.hash.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(hash, digest.hash) { difference |= a ^ b }
        return difference == 0
    }

    /// A new bearer token and the hash under which it is stored.
    public static func mintToken() -> (token: String, hash: [UInt8]) {
        let token = Data(randomBytes(32)).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        return (token, tokenHash(token))
    }

    /// The stored form of a token. Tokens are random and long, so a plain SHA-256 is enough.
    public static func tokenHash(_ token: String) -> [UInt8] {
        Array(SHA256.hash(data: Data(token.utf8)))
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// scrypt is deliberately slow: it runs on a dispatch queue, not on the cooperative pool.
    private func derive(_ secret: String, salt: [UInt8], kdf: String) async throws(VMSessionError) -> [UInt8] {
        let parts = kdf.split(separator: ":")
        guard parts.count == 4, parts[0] == "scrypt", let n = Int(parts[1]), let r = Int(parts[2]), let p = Int(parts[3]) else {
            throw VMSessionError(.internalError, "The stored secret uses an unknown key derivation '\(kdf)'.")
        }
        do {
            return try await offPool(qos: .userInitiated) {
                let key = try KDF.Scrypt.deriveKey(
                    from: Array(secret.utf8), salt: salt, outputByteCount: 32, rounds: n, blockSize: r, parallelism: p)
                return key.withUnsafeBytes { Array($0) }
            }
        } catch {
            throw VMSessionError(.internalError, "Hashing the secret failed.", cause: error)
        }
    }
}
