import Synchronization
import VMSessionCore
import VMSessionMetrics
import VMSessionStore

/// Who may do what: which session each token opens, the admin token, the throttle in front of secret
/// checks, and the quota on what each client holds.
///
/// Why it exists: these were jobs of the ``SessionManager``, which should own sessions and their actions,
/// not the rules about callers. This is the one owner of that state. The request path reads it directly
/// (a check is a hash and a lookup under a short lock, never held across a suspension or a call out), so no
/// request makes a round trip to the manager's actor to be checked. The manager changes it inside its own
/// changes (a new session's first token is granted in the store write that creates the session), so a
/// revoked token is refused from the next request on.
public final class AccessRegistry: Sendable {
    /// Who a bearer token speaks for.
    public enum Caller: Equatable, Sendable {
        /// The admin token: every session, origins and daemon settings.
        case admin
        /// A session's token: that session only.
        case session(SessionID)
    }

    private struct State: Sendable {
        /// Which session each token (by its hash) opens: the store's table, cached for the request path.
        var tokens: [[UInt8]: SessionID] = [:]
        var throttle = SecretThrottle<ElapsedClock.Instant>()
    }

    private let state = Mutex(State())
    private let adminHash: [UInt8]?
    /// How many sessions, and how much cpu, memory and disk in open ones, each client and the daemon may hold.
    public let quota: SessionQuota
    /// The sessions as they are now: whether one exists (404), and what each client holds (the quota).
    private let sessions: SessionReadModel
    private let clock: ElapsedClock
    private let metrics: DaemonMetrics

    init(adminToken: AdminToken?, quota: SessionQuota, sessions: SessionReadModel, clock: ElapsedClock, metrics: DaemonMetrics) {
        adminHash = adminToken?.hash
        self.quota = quota
        self.sessions = sessions
        self.clock = clock
        self.metrics = metrics
    }

    // MARK: Checking tokens (any thread)

    /// Who `token` speaks for; `unauthorized` if it is missing or unknown.
    public func caller(token: String?) throws(VMSessionError) -> Caller {
        guard let token, !token.isEmpty else {
            throw VMSessionError(.unauthorized, "This request needs a token (Authorization: Bearer …, or ?token=).")
        }
        // Hashed once, outside the lock; the admin token is compared in constant time.
        let hash = SecretHasher.tokenHash(token)
        if let adminHash, Self.constantTimeEqual(hash, adminHash) { return .admin }
        guard let owner = state.withLock({ $0.tokens[hash] }) else {
            throw VMSessionError(.unauthorized, "The token is not valid.")
        }
        return .session(owner)
    }

    /// Checks that `token` is valid (401 first: without a token nobody learns which session ids exist), that
    /// session `id` exists (404), and that the token may act on it (its own token, or the admin token; 403).
    @discardableResult
    public func authorize(token: String?, for id: SessionID) throws(VMSessionError) -> Caller {
        let caller = try caller(token: token)
        _ = try sessions.session(id)
        guard caller == .admin || caller == .session(id) else {
            throw VMSessionError(.notAllowed, "The token belongs to another session.")
        }
        return caller
    }

    /// Checks that `token` is the admin token: 401 without a valid token, 403 for a session's.
    public func authorizeAdmin(token: String?) throws(VMSessionError) {
        guard try caller(token: token) == .admin else {
            throw VMSessionError(.notAllowed, "This needs the admin token (in the daemon's state directory).")
        }
    }

    /// Whether `token` is one of session `id`'s (it proves an earlier login).
    func opens(_ id: SessionID, token: String?) -> Bool {
        guard let token else { return false }
        let hash = SecretHasher.tokenHash(token)
        return state.withLock { $0.tokens[hash] } == id
    }

    // MARK: Changing tokens (the manager, inside its changes)

    /// Every token the store holds, at start.
    func load(_ tokens: [(hash: [UInt8], session: SessionID)]) {
        let table = Dictionary(tokens.map { ($0.hash, $0.session) }, uniquingKeysWith: { _, last in last })
        state.withLock { $0.tokens = table }
    }

    func grant(_ hash: [UInt8], to id: SessionID) { state.withLock { $0.tokens[hash] = id } }

    /// Forgets one token (by its hash), or with nil every token of session `id`.
    func revoke(_ hash: [UInt8]?, of id: SessionID) {
        state.withLock { state in
            if let hash { state.tokens[hash] = nil } else { state.tokens = state.tokens.filter { $0.value != id } }
        }
    }

    /// Forgets tokens by their hashes (retention pruned them from the store).
    func forget(_ hashes: Set<[UInt8]>) {
        state.withLock { state in for hash in hashes { state.tokens[hash] = nil } }
    }

    // MARK: The secret throttle

    /// Reserves one secret check (see ``SecretThrottle/reserve(_:proven:counted:now:)``); a refusal is counted.
    func reserve(
        _ key: SecretThrottle<ElapsedClock.Instant>.Key, proven: Bool = false, counted: Bool = true
    ) throws(VMSessionError) -> SecretThrottle<ElapsedClock.Instant>.Reservation {
        let now = clock.now
        do throws(VMSessionError) {
            return try state.withLock { state throws(VMSessionError) in try state.throttle.reserve(key, proven: proven, counted: counted, now: now) }
        } catch {
            if error.code == .tooManyAttempts { metrics.secretThrottled() }
            throw error
        }
    }

    /// Ends a reserved secret check with its outcome.
    func settle(_ reservation: SecretThrottle<ElapsedClock.Instant>.Reservation, _ outcome: SecretThrottle<ElapsedClock.Instant>.Outcome) {
        let now = clock.now
        state.withLock { $0.throttle.settle(reservation, outcome, now: now) }
    }

    // MARK: The quota

    /// Checks that `client` may create one more session.
    func checkCreate(by client: String) throws(VMSessionError) {
        try quota.checkCreate(by: client, existing: holdings())
    }

    /// Checks that session `id` of `client` may be opened with `requirements`.
    func checkOpen(_ id: SessionID, by client: String, asking requirements: Requirements) throws(VMSessionError) {
        try quota.checkOpen(id, by: client, asking: requirements, existing: holdings())
    }

    /// Every session as the quota counts it.
    private func holdings() -> [SessionQuota.Holding] {
        sessions.allStored().map { SessionQuota.Holding(id: $0.session.id, client: $0.client, session: $0.session) }
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0 && a.count == b.count
    }
}
