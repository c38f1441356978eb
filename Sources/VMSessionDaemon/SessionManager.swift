import Foundation
import Logging
import ServiceLifecycle
import VMSessionContext
import VMSessionCore
import VMSessionHypervisor
import VMSessionMetrics
import VMSessionStore

/// The one owner of session state. Every change, whether it comes from the API, from the hypervisor or (later)
/// from the idle controller, goes through here: checked against the state machine, written to the
/// store before the hypervisor is touched (except pause, resume and reset, whose effect libvirt keeps: see
/// ``SessionAction/recordsIntentFirst``), confirmed after, and announced as events.
///
/// Who may ask for a change (tokens, the secret throttle, the quota) is the ``AccessRegistry``'s: the manager
/// changes it inside its own changes and asks it, and requests are checked by it without visiting this actor.
///
/// Long actions run as operations in the manager's own task group (see ``run()``); short ones run inline.
/// While an action runs on a session, no other action is accepted on it, and the actor re-checks its
/// state after every `await`.
public actor SessionManager: Service {
    /// Settings that shape how sessions are run.
    public struct Configuration: Sendable {
        /// How long a guest gets to power off after the ACPI request before it is powered off hard.
        public var stopGrace: Duration
        /// How many sessions, and how much cpu, memory and disk in open ones, each client and the daemon may hold.
        public var quota: SessionQuota
        /// What a guest started for `client` (a web origin, or `local`) may reach: the admin's choice for
        /// that origin, else the daemon's default (see ``EgressPolicy``).
        public var egress: @Sendable (_ client: String) -> EgressPolicy
        /// Which libvirt host a session opened from closed goes to (the daemon's placement over its hosts, see
        /// ``HostRegistry/placement()``), or whether `required` (a session from a template: its template's host) can
        /// take it; throws when none can. `local` (or `required`) unless the daemon says otherwise.
        public var place: Placer
        public typealias Placer = @Sendable (
            _ id: SessionID, _ requirements: Requirements, _ client: String, _ required: (host: String, why: String)?
        ) throws(VMSessionError) -> String

        public init(
            stopGrace: Duration = .seconds(30), quota: SessionQuota = .defaults,
            egress: @escaping @Sendable (_ client: String) -> EgressPolicy = { _ in .internet },
            place: @escaping Placer = { _, _, _, required in required?.host ?? HostDefinition.localName }
        ) {
            self.stopGrace = stopGrace
            self.quota = quota
            self.egress = egress
            self.place = place
        }
    }

    /// What a started action hands back: the operation, and the session as it is now.
    public struct ActionReceipt: Sendable {
        public let operation: SessionOperation
        public let session: Session
    }

    /// The input some actions take.
    public enum ActionInput: Sendable {
        case none
        case open(Requirements)
        /// User-data as a template, and the parameters that fill it.
        case start(userData: String?, parameters: [String: String])
        /// A snapshot or template action's work, or an `open`/`start` of a session from a template: run by its
        /// owner (see ``SessionWork``).
        case work(SessionWork)

        /// The requirements an `open` records.
        var requirements: Requirements? {
            switch self {
            case .open(let requirements): requirements
            case .work(let work): work.requirements
            default: nil
            }
        }
    }

    struct Job: Sendable {
        let sessionID: SessionID
        let operationID: OperationID
        let transition: SessionTransition
        let input: ActionInput
        /// The start's events of an action whose intent is not stored first (see
        /// ``SessionAction/recordsIntentFirst``): stored and announced with its end, before the end's own.
        var announcedAtEnd: [(SessionEvent.Kind, String)] = []
    }

    let store: SessionStore
    let events: EventHub
    let hypervisor: any Hypervisor
    public nonisolated let images: ImageStore
    let configuration: Configuration
    let hasher: SecretHasher
    let logger: Logger
    /// Counts operations and secret checks where they happen (see ``DaemonMetrics``).
    let metrics: DaemonMetrics
    /// Time for the throttle, progress pacing and waits: a `ContinuousClock` unless a test gives another.
    private let clock: ElapsedClock
    /// When each running operation last announced progress; progress is announced at most every
    /// ``progressInterval``, and always at its end.
    private var lastProgressEvent: [OperationID: ElapsedClock.Instant] = [:]
    /// Sessions whose VM reported a change while an action ran on them: looked at again when it ends.
    var changedDuringAction: Set<SessionID> = []
    /// Set once graceful shutdown began: an operation cut short then is left for the next start's
    /// ``reconcile()`` instead of being recorded as failed.
    var shuttingDown = false
    static let progressInterval: Duration = .milliseconds(250)

    /// What requests read without a round trip to this actor; every change below is published to it as it
    /// is made, and before the events that announce it are delivered (see ``SessionReadModel``).
    public nonisolated let readModel: SessionReadModel
    /// Tokens, the secret throttle and the quota: checked on the request path without this actor, changed
    /// by it inside its changes.
    public nonisolated let access: AccessRegistry
    var sessions: SessionReadModel.Table
    /// Whether each running session's guest API answered its last probes (see ``GuestAPIMonitor``).
    private var guestAPIUp: Set<SessionID> = [] { didSet { readModel.publish(apiUp: guestAPIUp) } }
    private nonisolated let daemonAddress = DaemonAddress()
    var pending: [SessionID: SessionTransition] = [:]
    private var operations: [OperationID: SessionOperation] = [:] { didSet { readModel.publish(running: operations) } }
    private let jobs: AsyncStream<Job>
    private let jobsContinuation: AsyncStream<Job>.Continuation
    /// The manager writes to SQLite inside its isolated code, atomically with its state changes; it runs on
    /// a thread of its own so that those short blocking writes never hold a cooperative-pool thread.
    private let executor = BlockingExecutor(label: "vmsessiond.session-manager")
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    public init(
        store: SessionStore, events: EventHub, hypervisor: any Hypervisor, images: ImageStore,
        configuration: Configuration = .init(), hasher: SecretHasher = .init(), adminToken: AdminToken? = nil,
        clock: any Clock<Duration> = ContinuousClock(), metrics: DaemonMetrics = DaemonMetrics(), logger: Logger
    ) {
        self.metrics = metrics
        let elapsed = ElapsedClock(clock)
        self.clock = elapsed
        readModel = SessionReadModel()
        access = AccessRegistry(
            adminToken: adminToken, quota: configuration.quota, sessions: readModel, clock: elapsed, metrics: metrics)
        sessions = SessionReadModel.Table(publishingTo: readModel)
        self.store = store
        self.events = events
        self.hypervisor = hypervisor
        self.images = images
        self.configuration = configuration
        self.hasher = hasher
        self.logger = logger
        (jobs, jobsContinuation) = AsyncStream.makeStream(of: Job.self)
    }

    // MARK: Service

    /// Runs operations and follows the hypervisor's lifecycle events until graceful shutdown. Operations
    /// under way when shutdown begins are cancelled, and one that ends early because of it is left pending
    /// in the store (its action and running operation) for the next start's ``reconcile()``, which
    /// settles it against the VM: a libvirt start or hibernate cannot be bounded usefully, and the VM is
    /// the truth about how far it got. Call ``reconcile()`` once before.
    public func run() async throws {
        let jobs = self.jobs
        let changes = hypervisor.changes
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await id in changes.cancelOnGracefulShutdown() {
                    await self.machineChanged(id)
                }
            }
            for await job in jobs.cancelOnGracefulShutdown() {
                group.addTask { await self.execute(job) }
            }
            shuttingDown = true
            group.cancelAll()
        }
    }

    /// Loads every session and settles the ones the hypervisor disagrees with, including actions that a
    /// previous run of the daemon left unfinished. The daemon calls it once, before serving requests.
    public func reconcile() async throws {
        let stored = try store.allSessions()
        access.load(try store.allTokens())
        for repair in try await hypervisor.repairInterrupted() {
            logger.notice("repaired a VM after an interrupted run", metadata: ["repair": "\(repair)"])
        }
        let machines = try await hypervisor.allMachines()
        for var entry in stored {
            let id = entry.session.id
            // A VM on a host that is lost now is not absent: its session is left as it is until the host returns.
            let reachable = machines[id] != nil || hypervisor.reaches(id)
            let status = machines[id] ?? .absent
            var lifecycle = SessionLifecycle(state: entry.session.state)
            var changes: [SessionLifecycle.Change] = []
            var announcements: [(SessionEvent.Kind, String)] = []
            if let action = entry.pendingAction, let transition = Self.interruptedTransition(action, state: entry.session.state) {
                lifecycle = SessionLifecycle(state: transition.during, pending: transition)
                let finished = reachable && Self.reached(transition, status: status)
                if let change = lifecycle.complete(succeeded: finished, reason: "the daemon restarted during '\(action.rawValue)'") {
                    changes.append(change)
                }
                if let operationID = entry.session.operationID, var operation = try store.operation(operationID),
                    operation.status == .running
                {
                    let error = VMSessionError(.controlFailed, "The daemon stopped while this operation ran.")
                    operation.status = finished ? .succeeded : .failed
                    operation.error = finished ? nil : .init(error)
                    operation.updatedAt = Date()
                    try store.save(operation)
                    let update = SessionEvent.OperationUpdate(operation: operation.id, action: action, error: operation.error)
                    announcements.append((finished ? .operationCompleted : .operationFailed, SessionEvent.encode(update)))
                }
            }
            if reachable, let change = lifecycle.observe(status) { changes.append(change) }
            if reachable, entry.pendingAction == .close, lifecycle.state == .closed {
                // A close killed after the VM was undefined may have left its files: finish removing them.
                try await hypervisor.remove(id)
            }
            entry.pendingAction = nil
            entry.session.operationID = nil
            if !changes.isEmpty || !announcements.isEmpty {
                entry.session.state = lifecycle.state
                entry.session.updatedAt = Date()
                if lifecycle.state == .error, let last = changes.last { entry.session.lastError = last.reason }
                let stateEvents = changes.map { Self.stateEvent($0) }
                let toStore = entry
                try events.record { try store.update(toStore, events: announcements + stateEvents) }
                logger.info(
                    "reconciled session", metadata: ["session": "\(id)", "state": "\(lifecycle.state.rawValue)", "vm": "\(status)"])
            }
            sessions[id] = entry
        }
        logger.info("sessions loaded", metadata: ["count": "\(sessions.count)"])
    }

    // MARK: Sessions

    /// Returns the session called `name` if `secret` is its secret, creating it if nobody owns the name yet,
    /// with a new bearer token for it. A wrong secret is refused with `password_denied`.
    ///
    /// `client` is who asks (the page's origin, or `local`), and `token` a token the caller may hold from an
    /// earlier login: see ``SecretThrottle`` for how they keep guessing slow without locking the owner out.
    public func requestSession(
        name: String, secret: String, client: String = "local", token: String? = nil
    ) async throws(VMSessionError) -> (session: Session, token: String, created: Bool) {
        guard Identifier.isValidSessionName(name) else {
            throw VMSessionError(
                .invalidArgument,
                "'name' must be 1 to 128 characters: letters, digits, spaces (not at either end) and . _ - : @ +.")
        }
        guard !secret.isEmpty, secret.utf8.count <= 1024 else {
            throw VMSessionError(.invalidArgument, "'secret' must be 1 to 1024 bytes long.")
        }
        let key = SecretThrottle<ElapsedClock.Instant>.Key(name: name, client: client)
        if let existing = try storeCall({ try store.session(named: name) }) {
            return try await grantAccess(to: existing, secret: secret, key: key, token: token)
        }
        try access.checkCreate(by: client)
        // The attempt is reserved before hashing, so that hashing stays bounded.
        let reservation = try access.reserve(key, counted: false)
        let digest: SecretDigest
        do throws(VMSessionError) {
            digest = try await hasher.digest(of: secret)
        } catch {
            access.settle(reservation, .unchecked)
            throw error
        }
        access.settle(reservation, .unchecked)
        metrics.secretChecked(.created)
        // Re-check after the await: someone may have taken the name meanwhile, or used the quota.
        if let existing = try storeCall({ try store.session(named: name) }) {
            return try await grantAccess(to: existing, secret: secret, key: key, token: token)
        }
        try access.checkCreate(by: client)
        let now = Date()
        let stored = StoredSession(
            session: Session(id: SessionID(), name: name, createdAt: now, updatedAt: now), secret: digest, client: client)
        let (token, tokenHash) = SecretHasher.mintToken()
        let created = SessionEvent.encode(SessionEvent.SessionCreated(name: name))
        _ = try storeCall {
            try events.record {
                let event = try store.createSession(stored, tokenHash: tokenHash, event: (.sessionCreated, created))
                // Published once stored and before the event goes out: whoever reacts to it finds the session.
                access.grant(tokenHash, to: stored.session.id)
                sessions[stored.session.id] = stored
                return [event]
            }
        }
        logger.info("session created", metadata: ["session": "\(stored.session.id)"])
        return (stored.session, token, true)
    }

    private func grantAccess(
        to stored: StoredSession, secret: String, key: SecretThrottle<ElapsedClock.Instant>.Key, token: String?
    ) async throws(VMSessionError) -> (session: Session, token: String, created: Bool) {
        let proven = access.opens(stored.session.id, token: token)
        let reservation = try access.reserve(key, proven: proven)
        let matches: Bool
        do throws(VMSessionError) {
            matches = try await hasher.verify(secret, against: stored.secret)
        } catch {
            access.settle(reservation, .unchecked)
            throw error
        }
        metrics.secretChecked(matches ? .matched : .wrong)
        guard matches else {
            access.settle(reservation, .wrong)
            logger.notice("wrong secret", metadata: ["session": "\(stored.session.id)", "client": "\(key.client)"])
            throw VMSessionError(.passwordDenied, "The secret does not match the one this session was created with.")
        }
        access.settle(reservation, .matched)
        // Re-check after the await: the session may have been deleted meanwhile.
        guard sessions[stored.session.id] != nil else {
            throw VMSessionError(.notFound, "The session '\(stored.session.name)' was deleted meanwhile; ask for it again to create it anew.")
        }
        let (token, hash) = SecretHasher.mintToken()
        try storeCall { try store.addToken(hash: hash, for: stored.session.id, at: Date()) }
        access.grant(hash, to: stored.session.id)
        let current = sessions[stored.session.id]?.session ?? stored.session
        return (current, token, false)
    }

    /// Who a bearer token speaks for (``AccessRegistry/Caller``).
    public typealias Caller = AccessRegistry.Caller

    /// Revokes a session's tokens: the one given, or (for the admin) all of them, and ends the event streams
    /// they opened.
    public func revokeTokens(of id: SessionID, token: String?) throws(VMSessionError) -> Int {
        let caller = try access.authorize(token: token, for: id)
        let hash = caller == .admin ? nil : token.map(SecretHasher.tokenHash)
        let count = try storeCall { try store.revokeTokens(of: id, hash: hash) }
        access.revoke(hash, of: id)
        // A revoked token's event streams end now, not at their next heartbeat or never.
        let ended = events.end { owner in owner.session == id && (hash == nil || owner.tokenHash == hash) }
        logger.info("tokens revoked", metadata: ["session": "\(id)", "count": "\(count)", "streams ended": "\(ended)"])
        return count
    }

    /// Deletes a closed session for good: its record, tokens, operations, properties and events. Its name is
    /// free again and it no longer counts against the quota. Its token (or the admin token) may do it; any
    /// other state is refused with `invalid_state` (close it first), and its streams end.
    public func deleteSession(_ id: SessionID, token: String?) throws(VMSessionError) {
        try access.authorize(token: token, for: id)
        try deleteClosed(id, reason: "deleted")
    }

    /// Deletes closed sessions unchanged since `cutoff` (retention); returns how many went.
    public func deleteClosedSessions(unchangedSince cutoff: Date) -> Int {
        // The manager holds every session: which ones expired is read from its state, not the store.
        let expired = sessions.values.filter { $0.session.state == .closed && pending[$0.session.id] == nil && $0.session.updatedAt < cutoff }
        var deleted = 0
        for entry in expired where (try? deleteClosed(entry.session.id, reason: "unused since \(entry.session.updatedAt)")) != nil {
            deleted += 1
        }
        return deleted
    }

    private func deleteClosed(_ id: SessionID, reason: String) throws(VMSessionError) {
        guard let entry = sessions[id] else { throw VMSessionError(.notFound, "There is no session \(id).") }
        guard entry.session.state == .closed, pending[id] == nil else {
            throw VMSessionError(
                .invalidState, "Only a closed session can be deleted; this one is \(entry.session.state.rawValue) (close it first).")
        }
        try storeCall { try store.deleteSession(id) }
        sessions[id] = nil
        access.revoke(nil, of: id)
        guestAPIUp.remove(id)
        let ended = events.end { $0.session == id }
        logger.info("session deleted", metadata: ["session": "\(id)", "reason": "\(reason)", "streams ended": "\(ended)"])
    }

    /// Forgets tokens the store no longer has (retention pruned them) and ends the streams they opened.
    public func forgetTokens(_ tokens: [(hash: [UInt8], session: SessionID)]) {
        let hashes = Set(tokens.map(\.hash))
        access.forget(hashes)
        let ended = events.end { owner in owner.tokenHash.map(hashes.contains) ?? false }
        logger.info("tokens pruned", metadata: ["count": "\(tokens.count)", "streams ended": "\(ended)"])
    }

    public nonisolated func session(_ id: SessionID) throws(VMSessionError) -> Session {
        try readModel.session(id)
    }

    public nonisolated func allSessions() -> [Session] {
        readModel.allSessions().sessions
    }

    public func operation(_ id: OperationID) throws(VMSessionError) -> SessionOperation {
        if let operation = operations[id] ?? readModel.operation(id) { return operation }
        guard let operation = try storeCall({ try store.operation(id) }) else {
            throw VMSessionError(.notFound, "There is no operation \(id).")
        }
        return operation
    }

    // MARK: Guest API

    /// The guest's address on QEMU's user network (its DHCP hands out this address first; the appliance
    /// sets it statically).
    public static let guestIP = "10.0.2.15"

    /// The daemon's own address: the base of a session's `apiURL`, its guest API through the daemon's
    /// proxy. Where the daemon itself reaches the guest (a Unix socket) is never handed out.
    public nonisolated var address: DaemonAddress { daemonAddress }

    /// Sessions whose guest API should be probed: running, with a network.
    public func guestAPITargets() -> [SessionID: GuestAPIRoute] {
        var targets: [SessionID: GuestAPIRoute] = [:]
        for (id, entry) in sessions where entry.session.state == .running && pending[id] == nil && entry.session.egress != nil {
            if let address = hypervisor.guestAPIAddress(of: id) { targets[id] = GuestAPIRoute(address: address) }
        }
        return targets
    }

    public nonisolated func isGuestAPIAvailable(_ id: SessionID) -> Bool { readModel.isGuestAPIAvailable(id) }

    /// Records what the probes found; announces `apiAvailable` / `apiUnavailable` when it changes.
    public func setGuestAPI(_ id: SessionID, available: Bool, reason: String) {
        guard let entry = sessions[id], available != guestAPIUp.contains(id) else { return }
        if available {
            guard entry.session.state == .running, entry.session.egress != nil else { return }
            guestAPIUp.insert(id)
            record(.apiAvailable, SessionEvent.GuestAPIAvailable(apiURL: address.guestAPIURL(for: id), ip: Self.guestIP), for: id)
        } else {
            guestAPIUp.remove(id)
            record(.apiUnavailable, SessionEvent.GuestAPIUnavailable(reason: reason), for: id)
        }
        logger.info("guest API \(available ? "available" : "unavailable")", metadata: ["session": "\(id)", "reason": "\(reason)"])
    }

    /// A VM that stops running takes its API with it, at once.
    private func guestAPIFollows(_ id: SessionID, state: SessionState) {
        if state != .running { setGuestAPI(id, available: false, reason: "the VM is \(state.rawValue)") }
    }

    private func record(_ kind: SessionEvent.Kind, _ payload: some Encodable, for id: SessionID) {
        let text = SessionEvent.encode(payload)
        recordOrLog("the event \(kind.rawValue)", session: id) { [try store.append(kind, payload: text, for: id, at: Date())] }
    }

    /// Records a change and its events from background work, where there is no caller to hand a failure to:
    /// a failure is logged.
    func recordOrLog(_ what: String, session id: SessionID?, _ write: () throws -> [SessionEvent]) {
        do {
            try events.record(write)
        } catch {
            var metadata: Logger.Metadata = ["error": "\(error)"]
            if let id { metadata["session"] = "\(id)" }
            logger.error("could not record \(what)", metadata: metadata)
        }
    }

    // MARK: Properties

    /// The longest property value kept.
    public static let maximumPropertyBytes = 4096

    public func properties(of id: SessionID) throws(VMSessionError) -> [String: String] {
        _ = try session(id)
        return try storeCall { try store.properties(of: id) }
    }

    /// Sets a guest property (the plugin's `setProperty`), kept in the database and announced.
    public func setProperty(_ name: String, to value: String, of id: SessionID) throws(VMSessionError) {
        _ = try session(id)
        guard Identifier.isValid(name, maxLength: 64) else {
            throw VMSessionError(.invalidArgument, "A property name is 1 to 64 letters, digits, '.', '_' or '-'; got '\(name)'.")
        }
        guard value.utf8.count <= Self.maximumPropertyBytes else {
            throw VMSessionError(.payloadTooLarge, "A property value may hold \(Self.maximumPropertyBytes) bytes; got \(value.utf8.count).")
        }
        let payload = SessionEvent.encode(SessionEvent.PropertyChanged(name: name, value: value))
        _ = try storeCall {
            try events.record { [try store.setProperty(name, to: value, of: id, event: (.propertyChanged, payload), at: Date())] }
        }
    }

    /// Waits until the operation has ended, or `timeout` has passed, and returns it as it is then.
    ///
    /// Woken by the end's own event (a session runs one operation at a time, so an operation that ends on its
    /// session is this one), not by polling: a 50 ms poll added 25 ms on average to every waited operation, a
    /// tenth of a restore's budget. Subscribing before each read of the operation means no end is missed; a
    /// re-check every ``operationRecheck`` covers an end whose event could not be stored.
    public func waitForOperation(_ id: OperationID, timeout: Duration) async throws(VMSessionError) -> SessionOperation {
        let deadline = clock.now + timeout
        let clock = self.clock
        while true {
            let current = try operation(id)
            guard current.status == .running, clock.now < deadline, !Task.isCancelled else { return current }
            // Dropped at the end of the round, which ends the subscription (an AsyncStream's last reference
            // going cancels it, and the hub's termination handler forgets it).
            let ends = events.subscribe(to: current.sessionID)
            // Read again now that the subscription exists: an end recorded before it has no event left to wait for.
            guard try operation(id).status == .running else { continue }
            let wake = min(deadline, clock.now + Self.operationRecheck)
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await event in ends where event.kind == .operationCompleted || event.kind == .operationFailed { return }
                }
                group.addTask { try? await clock.sleep(until: wake) }
                await group.next()
                group.cancelAll()
            }
        }
    }

    /// How often a wait for an operation looks at it even without its end's event.
    static let operationRecheck: Duration = .seconds(1)

    // MARK: Actions

    /// Starts `action` on a session. Long actions return at once with a running operation; short ones
    /// (pause, resume, reset) return when they are done.
    public func perform(_ action: SessionAction, on id: SessionID, input: ActionInput = .none) async throws(VMSessionError) -> ActionReceipt {
        guard sessions[id] != nil else { throw VMSessionError(.notFound, "There is no session \(id).") }
        // Validate input before anything changes.
        if case .open(let requirements) = input {
            try requirements.validate()
            try await images.check(requirements.version)
        } else if let requirements = input.requirements {
            try requirements.validate()
        }
        // Re-read after the await.
        guard var entry = sessions[id] else { throw VMSessionError(.notFound, "There is no session \(id).") }
        if let requirements = input.requirements {
            try access.checkOpen(id, by: entry.client, asking: requirements)
        }
        var input = input
        if case .start(let template?, let parameters) = input {
            // Bounded while it expands (payload_too_large at the user-data limit), before any state changes.
            let userData = try UserDataTemplate.render(template, parameters: parameters)
            input = .start(userData: userData, parameters: [:])
        } else if case .start(nil, let parameters) = input, !parameters.isEmpty {
            throw VMSessionError(.invalidArgument, "'parameters' fill in 'userData', which is missing.")
        }
        var work: SessionWork?
        if case .work(let given) = input { work = given }
        guard action.isSnapshotAction ? work != nil : (work == nil || action == .open || action == .start) else {
            throw VMSessionError(.internalError, "'\(action.rawValue)' was asked for without its work, or work without a snapshot action.")
        }
        var lifecycle = SessionLifecycle(state: entry.session.state, pending: pending[id])
        let transition = try lifecycle.request(action, reaching: work?.reaching)

        let now = Date()
        let operation = SessionOperation(
            sessionID: id, action: action, progress: .init(done: 0, total: 1, message: "\(action.rawValue) requested"),
            createdAt: now, updatedAt: now)
        if let requirements = input.requirements { entry.session.requirements = requirements }
        if action == .open, transition.from == .closed {
            // Placed once per open from closed; a session from a template goes to its template's host.
            if case .open(let requirements) = input {
                entry.session.host = try configuration.place(id, requirements, entry.client, nil)
            } else if let requirements = input.requirements {
                entry.session.host = try configuration.place(id, requirements, entry.client, work?.requiredHost)
            } else {
                entry.session.host = HostDefinition.localName
            }
        }
        if action == .start, let egress = work?.egress { entry.session.egress = egress }
        entry.session.state = lifecycle.state
        entry.session.operationID = operation.id
        entry.session.updatedAt = now
        entry.pendingAction = action
        var announcements: [(SessionEvent.Kind, String)] = [
            (.operationStarted, SessionEvent.encode(SessionEvent.OperationUpdate(operation: operation.id, action: action)))
        ]
        if transition.during != transition.from {
            announcements.append(
                Self.stateEvent(.init(from: transition.from, to: transition.during, reason: "\(action.rawValue) requested")))
        }
        let toStore = entry
        var job = Job(sessionID: id, operationID: operation.id, transition: transition, input: input)
        if action.recordsIntentFirst {
            _ = try storeCall {
                try events.record {
                    let recorded = try store.update(toStore, operation: operation, events: announcements)
                    // Published once stored and before the events go out: a reader that reacts to them sees the change.
                    sessions[id] = toStore
                    operations[operation.id] = operation
                    return recorded
                }
            }
        } else {
            // Held in memory until the action ends, where one transaction stores the operation and every event.
            sessions[id] = toStore
            operations[operation.id] = operation
            job.announcedAtEnd = announcements
        }
        pending[id] = transition
        guestAPIFollows(id, state: lifecycle.state)
        logger.info("action started", metadata: ["session": "\(id)", "action": "\(action.rawValue)", "operation": "\(operation.id)"])

        if action.isLong {
            jobsContinuation.yield(job)
            return ActionReceipt(operation: operation, session: entry.session)
        }
        let finished = await execute(job) ?? operation
        if let error = finished.error {
            throw VMSessionError(.init(error.code, legacyCode: error.legacyCode), error.message)
        }
        return ActionReceipt(operation: finished, session: try session(id))
    }

    /// Sets the execution cap. Applied at once if the VM runs, and kept for its next start otherwise.
    ///
    /// On a session whose cap the idle-aware controller owns (controlled, minCap > 0), a user's cap is
    /// refused with `invalid_state`: it would last only until the controller's next decision, so the page
    /// is told to change `daemonMinCap`/`daemonMaxCap` or to set `daemonControlled` to false instead.
    public func setExecutionCap(
        _ cap: ExecutionCap, on id: SessionID, reason: ExecutionCapReason = .user
    ) async throws(VMSessionError) -> Session {
        guard let current = sessions[id] else { throw VMSessionError(.notFound, "There is no session \(id).") }
        if reason == .user, current.session.daemon.controlsCap {
            throw VMSessionError(
                .invalidState,
                "The idle-aware controller sets this session's cap (daemonControlled with daemonMinCap \(current.session.daemon.minCap)); "
                    + "change daemonMinCap/daemonMaxCap with PATCH …/daemon, or set daemonControlled to false first.")
        }
        if sessions[id]?.session.state.hasRunningMachine == true {
            try await hypervisor.setExecutionCap(cap, for: id)
        }
        guard var entry = sessions[id] else { throw VMSessionError(.notFound, "There is no session \(id).") }
        entry.session.executionCap = cap
        entry.session.updatedAt = Date()
        let event = SessionEvent.encode(SessionEvent.ExecutionCapChanged(cap: cap, reason: reason))
        let toStore = entry
        _ = try storeCall {
            try events.record {
                let recorded = try store.update(toStore, events: [(.executionCapChanged, event)])
                sessions[id] = toStore
                return recorded
            }
        }
        logger.info("execution cap set", metadata: ["session": "\(id)", "cap": "\(cap)", "by": "\(reason.rawValue)"])
        return entry.session
    }

    // MARK: Images

    /// Removes image `version`, unless a session that is not closed was opened with it (its disk is an
    /// overlay on the image's file).
    public func removeImage(_ version: String) async throws(VMSessionError) {
        let users = sessions.values.filter { $0.session.requirements?.version == version && $0.session.state != .closed }
        if let user = users.first {
            throw VMSessionError(
                .invalidState, "Image '\(version)' is in use by session '\(user.session.name)' (\(user.session.state.rawValue)); close it first.")
        }
        try await images.remove(version)
    }

    // MARK: Running operations

    /// Carries out a job and records how it ended; returns the finished operation.
    @discardableResult
    private func execute(_ job: Job) async -> SessionOperation? {
        let finished: SessionOperation?
        let started = clock.now
        do {
            try await carryOut(job)
            finished = finish(job, error: nil)
            metrics.operationEnded(job.transition.action, .succeeded, after: started.duration(to: clock.now))
        } catch {
            if shuttingDown {
                leaveForReconciliation(job, error: error)
                metrics.operationEnded(job.transition.action, .interrupted, after: started.duration(to: clock.now))
                return nil
            }
            finished = finish(job, error: error)
            metrics.operationEnded(job.transition.action, .failed, after: started.duration(to: clock.now))
        }
        // The VM changed while the action ran (the guest died during a start or reset, say): what the
        // action concluded may already be wrong, so look at the VM again.
        if changedDuringAction.remove(job.sessionID) != nil {
            await machineChanged(job.sessionID)
        }
        return finished
    }

    /// An operation cut short by graceful shutdown: nothing is recorded, so the store keeps the pending
    /// action and the running operation (or, for an action stored only with its end, the session as it was),
    /// and the next start's ``reconcile()`` settles them against the VM.
    private func leaveForReconciliation(_ job: Job, error: any Error) {
        logger.notice(
            "operation left for reconciliation at the next start",
            metadata: ["session": "\(job.sessionID)", "action": "\(job.transition.action.rawValue)", "error": "\(error)"])
    }

    /// The hypervisor work of each action, with progress along the way.
    private func carryOut(_ job: Job) async throws(VMSessionError) {
        let id = job.sessionID
        if case .work(let work) = job.input {
            try await work.run { done, message in await self.progress(job, done, of: work.steps, message) }
            return
        }
        switch job.transition.action {
        case .open:
            guard case .open(let requirements) = job.input, let name = sessions[id]?.session.name else {
                throw VMSessionError(.internalError, "open ran without requirements")
            }
            let version = requirements.version
            progress(job, 1, of: 3, "Resolving image '\(version)'")
            let image = try await images.ensureAvailable(version) { download in
                await self.progress(job, 1, of: 3, download.message(version: version), download: download)
            }
            record(.debug, SessionEvent.Debug("Image '\(version)' resolved to \(Self.describe(image))"), for: id)
            progress(job, 2, of: 3, "Creating disk and defining the VM")
            try await hypervisor.define(MachineSpec(id: id, sessionName: name, requirements: requirements, image: image))
            record(
                .debug,
                SessionEvent.Debug(
                    "Defined VM \(id.machineName): \(requirements.cpus) CPU, \(requirements.memory) MiB of memory, "
                        + "\(requirements.disk) MiB disk, on \(hypervisor.description.uri)"), for: id)
            progress(job, 3, of: 3, "VM defined")
        case .start:
            let status = try await hypervisor.status(of: id)
            if case .shutOff(_, hasSavedState: true) = status {
                progress(job, 1, of: 3, "Restoring the VM from hibernation")
            } else {
                progress(job, 1, of: 3, "Preparing the VM")
                guard let entry = sessions[id], let requirements = entry.session.requirements else {
                    throw VMSessionError(.invalidState, "The session has not been opened.")
                }
                var seed: ContextSeed?
                if case .start(let userData?, _) = job.input {
                    seed = try ContextSeed.noCloud(userData: userData, instanceID: id.description, hostname: "vms-\(id.description.prefix(8))")
                }
                let image = try await images.machineImage(requirements.version)
                let spec = MachineSpec(id: id, sessionName: entry.session.name, requirements: requirements, image: image, seed: seed)
                try await boot(job, spec)
            }
            if case .shutOff(_, hasSavedState: true) = status { try await hypervisor.start(id) }
            // Without a cap mechanism a kept cap cannot be applied; the start still succeeds (a PUT says why).
            if let cap = sessions[id]?.session.executionCap, cap != .unlimited, hypervisor.description.supportsExecutionCap {
                try await hypervisor.setExecutionCap(cap, for: id)
            }
            progress(job, 3, of: 3, "VM running")
        case .pause:
            try await hypervisor.pause(id)
        case .resume:
            try await hypervisor.resume(id)
        case .reset:
            try await hypervisor.reset(id)
        case .stop:
            progress(job, 1, of: 2, "Asking the guest to power off")
            try await hypervisor.stop(id, grace: configuration.stopGrace)
            progress(job, 2, of: 2, "VM powered off")
        case .hibernate:
            progress(job, 1, of: 2, "Saving the VM's memory to disk")
            try await hypervisor.hibernate(id)
            progress(job, 2, of: 2, "VM hibernated")
        case .snapshot, .revert, .deleteSnapshot, .makeTemplate:
            throw VMSessionError(.internalError, "'\(job.transition.action.rawValue)' ran without its work")
        case .close:
            progress(job, 1, of: 2, "Powering off and removing the VM")
            try await hypervisor.remove(id)
            progress(job, 2, of: 2, "VM and disks removed")
        }
    }

    /// An image as a `debug` line shows it.
    static func describe(_ image: MachineImage) -> String {
        switch image {
        case .kernel(let kernel, let initrd, _): "the appliance: kernel \(kernel), initramfs \(initrd)"
        case .disk(let path, let format): "\(path) (\(format))"
        }
    }

    /// Defines the VM with its network (the egress policy of the session's client) and boots it.
    private func boot(_ job: Job, _ spec: MachineSpec) async throws(VMSessionError) {
        let id = job.sessionID
        var spec = spec
        guard let client = sessions[id]?.client else { throw VMSessionError(.notFound, "There is no session \(id).") }
        spec.egress = hypervisor.guestNetworkOffer(for: id).available ? configuration.egress(client) : nil
        try await hypervisor.define(spec)
        // Kept at once, so that a start left for reconciliation still knows its network.
        if var entry = sessions[id] {
            entry.session.egress = spec.egress
            sessions[id] = entry
            let toStore = entry
            recordOrLog("the guest's network", session: id) { try store.update(toStore, events: []) }
        }
        progress(job, 2, of: 3, "Booting the VM")
        try await hypervisor.start(id)
        if let egress = spec.egress {
            // Where the daemon reaches the guest is its own; pages only ever see the proxied URL.
            record(
                .debug,
                SessionEvent.Debug("The guest's network allows '\(egress.rawValue)'; its port 80 answers at \(address.guestAPIURL(for: id))"),
                for: id)
        }
    }

    private func progress(_ job: Job, _ done: Int, of total: Int, _ message: String, download: ImageDownloadProgress? = nil) {
        guard var operation = operations[job.operationID] else { return }
        let previous = operation.progress
        operation.progress = .init(done: max(done, previous.done), total: total, message: message)
        if let download {
            operation.progress.bytes = max(download.bytes, previous.bytes ?? 0)
            operation.progress.totalBytes = download.totalBytes
            operation.progress.bytesPerSecond = download.bytesPerSecond
        }
        operation.updatedAt = Date()
        operations[job.operationID] = operation
        // Progress never goes backwards, is not announced faster than a page can use, and its end always is.
        let now = clock.now
        let isFinal = operation.progress.done >= operation.progress.total
        if let last = lastProgressEvent[job.operationID], last.duration(to: now) < Self.progressInterval, !isFinal { return }
        lastProgressEvent[job.operationID] = now
        let payload = SessionEvent.encode(
            SessionEvent.ProgressUpdate(operation: operation.id, action: job.transition.action, progress: operation.progress))
        let toSave = operation
        recordOrLog("progress", session: job.sessionID) {
            try store.save(toSave)
            return [try store.append(.progress, payload: payload, for: job.sessionID, at: toSave.updatedAt)]
        }
    }

    private func finish(_ job: Job, error: (any Error)?) -> SessionOperation? {
        let id = job.sessionID
        guard var entry = sessions[id], var operation = operations[job.operationID] else { return nil }
        var lifecycle = SessionLifecycle(state: entry.session.state, pending: pending[id])
        let failure = error.map { ($0 as? VMSessionError) ?? VMSessionError(.internalError, "\($0)", cause: $0) }
        let reason = failure.map { "\(job.transition.action.rawValue) failed: \($0.message)" } ?? "\(job.transition.action.rawValue) done"
        let change = lifecycle.complete(succeeded: failure == nil, reason: reason)
        let now = Date()
        operation.status = failure == nil ? .succeeded : .failed
        operation.error = failure.map { SessionOperation.ErrorInfo($0) }
        operation.updatedAt = now
        if failure == nil { operation.progress.done = operation.progress.total }
        entry.session.state = lifecycle.state
        entry.session.operationID = nil
        entry.session.lastError = failure?.message
        // A closed session has no guest API, and a fresh definition gets its network when it starts.
        if lifecycle.state == .closed || job.transition.action == .open { entry.session.egress = nil }
        entry.session.updatedAt = now
        entry.pendingAction = nil
        var announcements = job.announcedAtEnd
        if let change { announcements.append(Self.stateEvent(change)) }
        let update = SessionEvent.OperationUpdate(operation: operation.id, action: job.transition.action, error: operation.error)
        announcements.append((failure == nil ? .operationCompleted : .operationFailed, SessionEvent.encode(update)))
        if let failure { announcements.append((.error, SessionEvent.encode(SessionOperation.ErrorInfo(failure)))) }
        let toStore = entry
        let toSave = operation
        // Published before the events go out (kept even if the write fails, which is logged, as before).
        sessions[id] = entry
        readModel.ended(operation)
        recordOrLog("the end of an operation", session: id) { try store.update(toStore, operation: toSave, events: announcements) }
        pending[id] = nil
        operations[operation.id] = nil
        lastProgressEvent[operation.id] = nil
        guestAPIFollows(id, state: lifecycle.state)
        if let failure {
            logger.warning(
                "action failed",
                metadata: ["session": "\(id)", "action": "\(job.transition.action.rawValue)", "error": "\(failure)"])
        } else {
            logger.info("action done", metadata: ["session": "\(id)", "action": "\(job.transition.action.rawValue)", "state": "\(lifecycle.state.rawValue)"])
        }
        return operation
    }

    // MARK: Changes from the hypervisor

    /// A lifecycle event arrived for a session's VM: look at the VM and move the session if it changed on
    /// its own (the guest powered off, the process died, someone used virsh).
    func machineChanged(_ id: SessionID) async {
        guard sessions[id] != nil else { return }
        guard pending[id] == nil else {
            changedDuringAction.insert(id)
            return
        }
        let status: MachineStatus
        do {
            status = try await hypervisor.status(of: id)
        } catch {
            logger.warning("cannot read a VM's state", metadata: ["session": "\(id)", "error": "\(error)"])
            return
        }
        // Re-check after the await: an action may have started meanwhile (it looks again when it ends).
        guard var entry = sessions[id] else { return }
        guard pending[id] == nil else {
            changedDuringAction.insert(id)
            return
        }
        var lifecycle = SessionLifecycle(state: entry.session.state)
        guard let change = lifecycle.observe(status) else { return }
        entry.session.state = lifecycle.state
        entry.session.updatedAt = Date()
        if lifecycle.state == .error { entry.session.lastError = change.reason }
        let toStore = entry
        sessions[id] = entry
        recordOrLog("a VM change", session: id) { try store.update(toStore, events: [Self.stateEvent(change)]) }
        guestAPIFollows(id, state: lifecycle.state)
        logger.notice(
            "VM changed on its own",
            metadata: ["session": "\(id)", "from": "\(change.from.rawValue)", "to": "\(change.to.rawValue)", "reason": "\(change.reason)"])
    }

    // MARK: Helpers

    static func stateEvent(_ change: SessionLifecycle.Change) -> (SessionEvent.Kind, String) {
        (.stateChanged, SessionEvent.encode(SessionEvent.StateChanged(state: change.to, previous: change.from, reason: change.reason)))
    }

    /// The transition an interrupted action was making, given the state it left behind.
    static func interruptedTransition(_ action: SessionAction, state: SessionState) -> SessionTransition? {
        SessionState.allCases.lazy.compactMap { SessionTransition.of(action, from: $0) }.first { $0.during == state }
    }

    /// Whether the VM's status shows that an interrupted action got to its end.
    static func reached(_ transition: SessionTransition, status: MachineStatus) -> Bool {
        switch (transition.onSuccess, status) {
        case (.closed, .absent), (.running, .running), (.running, .shuttingDown), (.running, .suspendedByGuest), (.paused, .paused),
            (.saved, .shutOff(_, true)):
            return true
        case (.open, .shutOff(_, false)): return true
        default: return false
        }
    }
}
