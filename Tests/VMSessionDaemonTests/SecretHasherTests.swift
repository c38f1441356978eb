import Testing
import VMSessionDaemon

@Suite("Secrets and tokens")
struct SecretHasherTests {
    @Test("the production scrypt digest verifies the right secret, refuses a wrong one, and never holds the secret")
    func digestVerifies() async throws {
        let hasher = SecretHasher()
        let digest = try await hasher.digest(of: "correct horse")
        #expect(digest.kdf == "scrypt:16384:8:1")
        #expect(try await hasher.verify("correct horse", against: digest))
        #expect(try await !hasher.verify("correct horsf", against: digest))
        #expect(try await !hasher.verify("", against: digest))
        #expect(!digest.hash.isEmpty && digest.hash != Array("correct horse".utf8))
    }

    @Test("two digests of one secret differ by their salt")
    func saltsDiffer() async throws {
        var hasher = SecretHasher()
        hasher.rounds = 1 << 10
        let a = try await hasher.digest(of: "same")
        let b = try await hasher.digest(of: "same")
        #expect(a.salt != b.salt && a.hash != b.hash)
    }

    @Test("tokens are random, URL-safe, and stored only as their hash")
    func tokens() {
        let (first, firstHash) = SecretHasher.mintToken()
        let (second, _) = SecretHasher.mintToken()
        #expect(first != second)
        #expect(first.count >= 43)
        #expect(first.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
        #expect(SecretHasher.tokenHash(first) == firstHash)
        #expect(firstHash.count == 32)
    }
}
