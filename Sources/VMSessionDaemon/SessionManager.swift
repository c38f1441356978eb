import Foundation
import Logging
import ServiceLifecycle
import VMSessionContext
import VMSessionCore
import VMSessionHypervisor
import VMSessionStore

/// The one owner of session state. Every change, whether it comes from the API, from the hypervisor or (later)
/// from the idle controller, goes through here: checked against the state machine, written to the
/// store before the hypervisor is touched, confirmed after, and announced as events.
///
/// Long actions run as operations in the manager's own task group (see ``run()``); short ones run inline.
/// While an action runs on a session, no other action is accepted on it, and the actor re-checks its
/// state after every `await`.
public actor SessionManager: Service {
    /// Settings that shape how sessions are run.
    public struct Configuration: Sendable {
        /// How long a guest gets to power off after the ACPI request before it is powered off hard.
        public var stopGrace: Duration
        public init(stopGrace: Duration = .seconds(30)) {
            self.stopGrace = stopGrace
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
        case start(userData: String?)
    }

    struct Job: Sendable {
        let sessionID: SessionID
        let operationID: OperationID
        let transition: SessionTransition
        let input: ActionInput
    }

    let store: SessionStore
    let events: EventHub
    let hypervisor: any Hypervisor
    public nonisolated let images: ImageCatalog
    let configuration: Configuration
    let hasher: SecretHasher
    let logger: Logger

    var sessions: [SessionID: StoredSession] = [:]
    var pending: [SessionID: SessionTransition] = [:]
    private var operations: [OperationID: SessionOperation] = [:]
    private let jobs: AsyncStream<Job>
    private let jobsContinuation: AsyncStream<Job>.Continuation

    public init(
        store: SessionStore, events: EventHub, hypervisor: any Hypervisor, images: ImageCatalog,
        configuration: Configuration = .init(), hasher: SecretHasher = .init(), logger: Logger
    ) {
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
    /// under way when shutdown begins are allowed to finish. Call ``reconcile()`` once before.
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
            group.cancelAll()
        }
    }

    /// Loads every session and settles the ones the hypervisor disagrees with, including actions that a
    /// previous run of the daemon left unfinished. The daemon calls it once, before serving requests.
    public func reconcile() async throws {
        let stored = try store.allSessions()
        let machines = try await hypervisor.allMachines()
        for var entry in stored {
            let id = entry.session.id
            let status = machines[id] ?? .absent
            var lifecycle = SessionLifecycle(state: entry.session.state)
            var changes: [SessionLifecycle.Change] = []
            var announcements: [(SessionEvent.Kind, String)] = []
            if let action = entry.pendingAction, let transition = Self.interruptedTransition(action, state: entry.session.state) {
                lifecycle = SessionLifecycle(state: transition.during, pending: transition)
                let finished = Self.reached(transition, status: status)
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
            if let change = lifecycle.observe(status) { changes.append(change) }
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
    public func requestSession(name: String, secret: String) async throws(VMSessionError) -> (session: Session, token: String, created: Bool) {
        guard Identifier.isValidSessionName(name) else {
            throw VMSessionError(
                .invalidArgument,
                "'name' must be 1 to 128 characters: letters, digits, spaces (not at either end) and . _ - : @ +.")
        }
        guard !secret.isEmpty, secret.utf8.count <= 1024 else {
            throw VMSessionError(.invalidArgument, "'secret' must be 1 to 1024 bytes long.")
        }
        if let existing = try storeCall({ try store.session(named: name) }) {
            return try await grantAccess(to: existing, secret: secret)
        }
        let digest = try await hasher.digest(of: secret)
        // Re-check after the await: someone may have taken the name meanwhile.
        if let existing = try storeCall({ try store.session(named: name) }) {
            return try await grantAccess(to: existing, secret: secret)
        }
        let now = Date()
        let stored = StoredSession(session: Session(id: SessionID(), name: name, createdAt: now, updatedAt: now), secret: digest)
        let (token, tokenHash) = SecretHasher.mintToken()
        let created = SessionEvent.encode(SessionEvent.SessionCreated(name: name))
        _ = try storeCall {
            try events.record { [try store.createSession(stored, tokenHash: tokenHash, event: (.sessionCreated, created))] }
        }
        sessions[stored.session.id] = stored
        logger.info("session created", metadata: ["session": "\(stored.session.id)"])
        return (stored.session, token, true)
    }

    private func grantAccess(to stored: StoredSession, secret: String) async throws(VMSessionError) -> (session: Session, token: String, created: Bool) {
        guard try await hasher.verify(secret, against: stored.secret) else {
            logger.notice("wrong secret", metadata: ["session": "\(stored.session.id)"])
            throw VMSessionError(.passwordDenied, "The secret does not match the one this session was created with.")
        }
        let (token, hash) = SecretHasher.mintToken()
        try storeCall { try store.addToken(hash: hash, for: stored.session.id, at: Date()) }
        let current = sessions[stored.session.id]?.session ?? stored.session
        return (current, token, false)
    }

    /// The session a bearer token grants, checked against the session the caller asks for.
    public func authorize(token: String?, for id: SessionID) throws(VMSessionError) {
        guard let token, !token.isEmpty else {
            throw VMSessionError(.unauthorized, "This request needs the session's token (Authorization: Bearer …, or ?token=).")
        }
        guard let owner = try storeCall({ try store.sessionID(forTokenHash: SecretHasher.tokenHash(token)) }) else {
            throw VMSessionError(.unauthorized, "The token is not valid.")
        }
        guard owner == id else {
            throw VMSessionError(.notAllowed, "The token belongs to another session.")
        }
    }

    public func session(_ id: SessionID) throws(VMSessionError) -> Session {
        guard let stored = sessions[id] else { throw VMSessionError(.notFound, "There is no session \(id).") }
        return stored.session
    }

    public func allSessions() -> [Session] {
        sessions.values.map(\.session).sorted { $0.createdAt < $1.createdAt }
    }

    public func operation(_ id: OperationID) throws(VMSessionError) -> SessionOperation {
        if let operation = operations[id] { return operation }
        guard let operation = try storeCall({ try store.operation(id) }) else {
            throw VMSessionError(.notFound, "There is no operation \(id).")
        }
        return operation
    }

    /// CPU time the session's VM has used, if it runs.
    public func cpuTime(of id: SessionID) async -> UInt64? {
        guard sessions[id]?.session.state.hasRunningMachine == true else { return nil }
        return try? await hypervisor.cpuTime(of: id)
    }

    // MARK: Actions

    /// Starts `action` on a session. Long actions return at once with a running operation; short ones
    /// (pause, resume, reset) return when they are done.
    public func perform(_ action: SessionAction, on id: SessionID, input: ActionInput = .none) async throws(VMSessionError) -> ActionReceipt {
        guard var entry = sessions[id] else { throw VMSessionError(.notFound, "There is no session \(id).") }
        // Validate input before anything changes.
        if case .open(let requirements) = input {
            try requirements.validate()
            _ = try images.image(for: requirements.version)
        }
        if case .start(let userData?) = input {
            _ = try ContextSeed.noCloud(userData: userData, instanceID: id.description, hostname: "check")
        }
        var lifecycle = SessionLifecycle(state: entry.session.state, pending: pending[id])
        let transition = try lifecycle.request(action)

        let now = Date()
        let operation = SessionOperation(
            sessionID: id, action: action, progress: .init(done: 0, total: 1, message: "\(action.rawValue) requested"),
            createdAt: now, updatedAt: now)
        if case .open(let requirements) = input { entry.session.requirements = requirements }
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
        _ = try storeCall { try events.record { try store.update(toStore, operation: operation, events: announcements) } }
        sessions[id] = entry
        pending[id] = transition
        operations[operation.id] = operation
        logger.info("action started", metadata: ["session": "\(id)", "action": "\(action.rawValue)", "operation": "\(operation.id)"])

        let job = Job(sessionID: id, operationID: operation.id, transition: transition, input: input)
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
        _ = try storeCall { try events.record { try store.update(toStore, events: [(.executionCapChanged, event)]) } }
        sessions[id] = entry
        logger.info("execution cap set", metadata: ["session": "\(id)", "cap": "\(cap)", "by": "\(reason.rawValue)"])
        return entry.session
    }

    // MARK: Running operations

    /// Carries out a job and records how it ended; returns the finished operation.
    @discardableResult
    private func execute(_ job: Job) async -> SessionOperation? {
        do {
            try await carryOut(job)
            return finish(job, error: nil)
        } catch {
            return finish(job, error: error)
        }
    }

    /// The hypervisor work of each action, with progress along the way.
    private func carryOut(_ job: Job) async throws(VMSessionError) {
        let id = job.sessionID
        switch job.transition.action {
        case .open:
            guard case .open(let requirements) = job.input, let name = sessions[id]?.session.name else {
                throw VMSessionError(.internalError, "open ran without requirements")
            }
            progress(job, 1, of: 3, "Resolving image '\(requirements.version)'")
            let image = try images.image(for: requirements.version)
            progress(job, 2, of: 3, "Creating disk and defining the VM")
            try await hypervisor.define(MachineSpec(id: id, sessionName: name, requirements: requirements, image: image))
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
                if case .start(let userData?) = job.input {
                    seed = try ContextSeed.noCloud(userData: userData, instanceID: id.description, hostname: "vms-\(id.description.prefix(8))")
                }
                let image = try images.image(for: requirements.version)
                try await hypervisor.define(
                    MachineSpec(id: id, sessionName: entry.session.name, requirements: requirements, image: image, seed: seed))
                progress(job, 2, of: 3, "Booting the VM")
            }
            try await hypervisor.start(id)
            if let cap = sessions[id]?.session.executionCap, cap != .unlimited {
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
        case .close:
            progress(job, 1, of: 2, "Powering off and removing the VM")
            try await hypervisor.remove(id)
            progress(job, 2, of: 2, "VM and disks removed")
        }
    }

    private func progress(_ job: Job, _ done: Int, of total: Int, _ message: String) {
        guard var operation = operations[job.operationID] else { return }
        operation.progress = .init(done: max(done, operation.progress.done), total: total, message: message)
        operation.updatedAt = Date()
        operations[job.operationID] = operation
        let payload = SessionEvent.encode(
            SessionEvent.ProgressUpdate(operation: operation.id, action: job.transition.action, progress: operation.progress))
        let toSave = operation
        do {
            try events.record {
                try store.save(toSave)
                return [try store.append(.progress, payload: payload, for: job.sessionID, at: toSave.updatedAt)]
            }
        } catch {
            logger.error("could not record progress", metadata: ["session": "\(job.sessionID)", "error": "\(error)"])
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
        entry.session.updatedAt = now
        entry.pendingAction = nil
        var announcements: [(SessionEvent.Kind, String)] = []
        if let change { announcements.append(Self.stateEvent(change)) }
        let update = SessionEvent.OperationUpdate(operation: operation.id, action: job.transition.action, error: operation.error)
        announcements.append((failure == nil ? .operationCompleted : .operationFailed, SessionEvent.encode(update)))
        if let failure { announcements.append((.error, SessionEvent.encode(SessionOperation.ErrorInfo(failure)))) }
        let toStore = entry
        let toSave = operation
        do {
            try events.record { try store.update(toStore, operation: toSave, events: announcements) }
        } catch {
            logger.error("could not record the end of an operation", metadata: ["session": "\(id)", "error": "\(error)"])
        }
        sessions[id] = entry
        pending[id] = nil
        operations[operation.id] = nil
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
        guard sessions[id] != nil, pending[id] == nil else { return }
        let status: MachineStatus
        do {
            status = try await hypervisor.status(of: id)
        } catch {
            logger.warning("cannot read a VM's state", metadata: ["session": "\(id)", "error": "\(error)"])
            return
        }
        // Re-check after the await: an action may have started meanwhile.
        guard var entry = sessions[id], pending[id] == nil else { return }
        var lifecycle = SessionLifecycle(state: entry.session.state)
        guard let change = lifecycle.observe(status) else { return }
        entry.session.state = lifecycle.state
        entry.session.updatedAt = Date()
        if lifecycle.state == .error { entry.session.lastError = change.reason }
        let toStore = entry
        do {
            try events.record { try store.update(toStore, events: [Self.stateEvent(change)]) }
        } catch {
            logger.error("could not record a VM change", metadata: ["session": "\(id)", "error": "\(error)"])
        }
        sessions[id] = entry
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
        case (.closed, .absent), (.running, .running), (.paused, .paused), (.saved, .shutOff(_, true)): return true
        case (.open, .shutOff(_, false)): return true
        default: return false
        }
    }

    func storeCall<T>(_ body: () throws -> T) throws(VMSessionError) -> T {
        do { return try body() } catch let error as VMSessionError { throw error } catch {
            throw VMSessionError(.ioError, "The database failed.", cause: error)
        }
    }
}
