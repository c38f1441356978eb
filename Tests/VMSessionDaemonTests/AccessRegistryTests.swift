import Foundation
import Testing
import VMSessionCore
import VMSessionMetrics
import VMSessionStore
import VMSessionTestSupport

@testable import VMSessionDaemon

/// The registry of who may do what, on its own: the sessions it checks against are published into a read
/// model by hand, as the manager publishes them, and its time is a manual clock.
@Suite("Access registry")
struct AccessRegistryTests {
    struct Fixture {
        let registry: AccessRegistry
        let sessions: SessionReadModel
        let clock = ManualClock()
        let admin = "admin-token-for-the-registry-tests-0123456789"

        init(quota: SessionQuota = .defaults) {
            sessions = SessionReadModel()
            registry = AccessRegistry(
                adminToken: AdminToken(hash: SecretHasher.tokenHash(admin), path: "/nonexistent"), quota: quota,
                sessions: sessions, clock: ElapsedClock(clock), metrics: DaemonMetrics())
        }

        /// A session of `client` as the manager publishes it, with a token of its own.
        func session(of client: String = "local", opened requirements: Requirements? = nil) -> (id: SessionID, token: String) {
            let id = SessionID()
            var session = Session(id: id, name: "s-\(id)", createdAt: Date(), updatedAt: Date())
            if let requirements {
                session.state = .open
                session.requirements = requirements
            }
            sessions.publish(
                StoredSession(session: session, secret: SecretDigest(kdf: "scrypt:1024:8:1", salt: [1], hash: [2]), client: client),
                for: id)
            let (token, hash) = SecretHasher.mintToken()
            registry.grant(hash, to: id)
            return (id, token)
        }
    }

    /// The code of the error `check` throws; nil if it throws none.
    static func code(_ check: () throws -> Void) -> VMSessionError.Code? {
        do {
            try check()
            return nil
        } catch {
            return (error as? VMSessionError)?.code ?? .internalError
        }
    }

    @Test("a token is checked in the order 401, 404, 403: nobody without a valid token learns which sessions exist")
    func checkOrder() throws {
        let fixture = Fixture()
        let (mine, token) = fixture.session()
        let (other, _) = fixture.session()
        let unknown = SessionID()
        let registry = fixture.registry
        #expect(Self.code { _ = try registry.authorize(token: nil, for: unknown) } == .unauthorized)
        #expect(Self.code { _ = try registry.authorize(token: "forged", for: mine) } == .unauthorized)
        #expect(Self.code { _ = try registry.authorize(token: token, for: unknown) } == .notFound)
        #expect(Self.code { _ = try registry.authorize(token: token, for: other) } == .notAllowed)
        #expect(try registry.authorize(token: token, for: mine) == .session(mine))
        #expect(try registry.authorize(token: fixture.admin, for: other) == .admin)
        #expect(Self.code { try registry.authorizeAdmin(token: token) } == .notAllowed)
        #expect(Self.code { try registry.authorizeAdmin(token: nil) } == .unauthorized)
        #expect(Self.code { try registry.authorizeAdmin(token: fixture.admin) } == nil)
    }

    @Test("a revoked, a session's every, or a forgotten token is refused by the next check; the others still pass")
    func revocation() throws {
        let fixture = Fixture()
        let registry = fixture.registry
        let (id, first) = fixture.session()
        let (second, secondHash) = SecretHasher.mintToken()
        registry.grant(secondHash, to: id)
        #expect(registry.opens(id, token: first) && registry.opens(id, token: second))

        registry.revoke(SecretHasher.tokenHash(first), of: id)
        #expect(Self.code { _ = try registry.caller(token: first) } == .unauthorized)
        #expect(try registry.caller(token: second) == .session(id))

        let (other, otherToken) = fixture.session()
        registry.revoke(nil, of: id)
        #expect(Self.code { _ = try registry.caller(token: second) } == .unauthorized)
        #expect(try registry.caller(token: otherToken) == .session(other), "another session's tokens are untouched")

        registry.forget([SecretHasher.tokenHash(otherToken)])
        #expect(!registry.opens(other, token: otherToken))
    }

    @Test("the quota counts what the published sessions hold, per client and in all")
    func quota() throws {
        let perClient = SessionQuota.Resources(cpus: 2, memory: 1024, disk: 4096)
        let fixture = Fixture(
            quota: SessionQuota(
                sessions: 3, sessionsPerClient: 2, resources: .init(cpus: 64, memory: 65_536, disk: 1_048_576),
                resourcesPerClient: perClient))
        let registry = fixture.registry
        let page = "https://lab.example"
        let small = Requirements(cpus: 1, memory: 512, disk: 1024, version: "appliance")
        let (open, _) = fixture.session(of: page, opened: small)
        #expect(Self.code { try registry.checkCreate(by: page) } == nil)
        #expect(Self.code { try registry.checkOpen(SessionID(), by: page, asking: small) } == nil)
        let (second, _) = fixture.session(of: page)
        #expect(Self.code { try registry.checkCreate(by: page) } == .tooManySessions, "two sessions per client")
        #expect(Self.code { try registry.checkCreate(by: "local") } == nil, "another client is not held back")
        let large = Requirements(cpus: 2, memory: 512, disk: 1024, version: "appliance")
        #expect(Self.code { try registry.checkOpen(second, by: page, asking: large) } == .insufficientResources)
        #expect(Self.code { try registry.checkOpen(open, by: page, asking: large) } == nil, "a re-open does not count what it held")
        _ = fixture.session(of: "local")
        #expect(Self.code { try registry.checkCreate(by: "local") } == .tooManySessions, "three sessions in all")
    }

    @Test("wrong secrets lock a name for one client on the registry's clock; a proven owner and other clients pass")
    func throttle() throws {
        let fixture = Fixture()
        let registry = fixture.registry
        let key = SecretThrottle<ElapsedClock.Instant>.Key(name: "shared", client: "https://guess.example")
        for _ in 0..<2 { registry.settle(try registry.reserve(key), .wrong) }
        #expect(Self.code { _ = try registry.reserve(key) } == .tooManyAttempts)
        registry.settle(try registry.reserve(key, proven: true), .matched)
        registry.settle(try registry.reserve(.init(name: "shared", client: "local")), .matched)
        fixture.clock.advance(by: .seconds(61))
        registry.settle(try registry.reserve(key), .matched)
    }
}
