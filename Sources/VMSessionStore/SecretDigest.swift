/// A session secret as it is kept: the key-derivation function and its parameters, the salt, and the
/// derived hash. Produced and checked by the daemon; the store only keeps the bytes.
public struct SecretDigest: Equatable, Sendable {
    public var kdf: String
    public var salt: [UInt8]
    public var hash: [UInt8]

    public init(kdf: String, salt: [UInt8], hash: [UInt8]) {
        self.kdf = kdf
        self.salt = salt
        self.hash = hash
    }
}
