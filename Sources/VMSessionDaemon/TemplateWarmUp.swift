import Foundation
import Logging
import ServiceLifecycle
import VMSessionCore
import VMSessionHypervisor

/// Makes templates from an image and a one-time warm-up user-data, for an admin who has no prepared session:
/// it opens an internal session (`template:<name>`) from the image, starts it with the warm-up user-data,
/// waits for the guest's ready line on its serial console (see ``ReadyMarkerScanner``), has the
/// ``TemplateService`` make the template of it, and closes and deletes the session, on success or not.
///
/// Every step is one of the manager's own actions on that session (its operations and events show them); this
/// type only chains them and keeps how far each warm-up got (``TemplateWarmUpStatus``, in memory: a warm-up
/// does not outlive the daemon, and one stopped in the middle leaves its session for the admin to close).
/// A Service, so that the warm-ups run in the daemon's one ServiceGroup and end with it.
public actor TemplateWarmUp: Service {
    let manager: SessionManager
    let templates: TemplateService
    let logger: Logger
    /// The warm-up's deadline and its console polls are timed by this clock.
    let clock = ContinuousClock()
    /// How often the console is read while waiting for the ready line.
    let pollInterval: Duration
    private var warmUps: [String: TemplateWarmUpStatus] = [:]
    private let jobs: AsyncStream<Job>
    private let jobsContinuation: AsyncStream<Job>.Continuation
    /// Finished warm-ups kept to be read, the oldest forgotten first.
    static let keptFinished = 64

    struct Job: Sendable {
        let request: TemplateWarmUpRequest
        let session: SessionID
        let token: String
        let open: OperationID
    }

    public init(
        manager: SessionManager, templates: TemplateService, pollInterval: Duration = .milliseconds(250), logger: Logger = Logger(label: "vmsessiond.warm-up")
    ) {
        self.manager = manager
        self.templates = templates
        self.pollInterval = pollInterval
        self.logger = logger
        (jobs, jobsContinuation) = AsyncStream.makeStream(of: Job.self)
    }

    /// Runs the warm-ups asked for until graceful shutdown, which cancels those under way.
    public func run() async throws {
        let jobs = self.jobs
        await withDiscardingTaskGroup { group in
            for await job in jobs.cancelOnGracefulShutdown() {
                group.addTask { await self.carryOut(job) }
            }
            group.cancelAll()
        }
    }

    /// Template `name`'s last warm-up, running or finished.
    public func status(of name: String) -> TemplateWarmUpStatus? { warmUps[name] }

    /// Every warm-up known since the daemon started (those under way and the last ``keptFinished`` that ended),
    /// newest first: what an admin's list shows beside the templates, since a warm-up under way has no template yet.
    public func all() -> [TemplateWarmUpStatus] {
        warmUps.values.sorted { ($0.createdAt, $0.name) > ($1.createdAt, $1.name) }
    }

    /// Begins a warm-up: checked first (the request, the name free, the image there), then the internal session
    /// is made and opened; the rest runs in the background. Nothing is left if a check or the open is refused.
    public func begin(_ request: TemplateWarmUpRequest) async throws(VMSessionError) -> TemplateWarmUpStatus {
        try request.validate()
        let previous = warmUps[request.name]
        if let previous, previous.status == .running {
            throw VMSessionError(.invalidState, "Template '\(request.name)' is being warmed up already (session \(previous.session.map { "\($0)" } ?? "?")).")
        }
        // Held from here on, across the awaits below: a second request for the name is refused as under way.
        warmUps[request.name] = TemplateWarmUpStatus(name: request.name, image: request.requirements.version, at: Date())
        do {
            return try await prepare(request)
        } catch {
            warmUps[request.name] = previous
            throw error
        }
    }

    /// The checks that need the other owners, then the internal session made and opened.
    private func prepare(_ request: TemplateWarmUpRequest) async throws(VMSessionError) -> TemplateWarmUpStatus {
        if try await templates.isTaken(request.name) {
            throw VMSessionError(.invalidState, "There is already a template '\(request.name)'; delete it first or choose another name.")
        }
        let versions = await manager.images.versions()
        guard versions.contains(request.requirements.version) else {
            throw VMSessionError(.notFound, "There is no image '\(request.requirements.version)' to warm up; see GET /api/v1/images.")
        }
        if versions.contains(request.name) {
            throw VMSessionError(.invalidState, "'\(request.name)' is an image's version; a template needs a name of its own.")
        }
        if manager.allSessions().contains(where: { $0.name == request.sessionName }) {
            throw VMSessionError(
                .invalidState,
                "A session '\(request.sessionName)' exists: another warm-up of this name, or one a stopped daemon left; "
                    + "close and delete it first (vmsessionctl sessions close/delete).")
        }
        // A secret nobody needs: the daemon acts on the session itself, and the session is deleted at the end.
        let secret = UUID().uuidString + UUID().uuidString
        let (session, token, _) = try await manager.requestSession(name: request.sessionName, secret: secret)
        var status = TemplateWarmUpStatus(name: request.name, image: request.requirements.version, at: Date())
        status.session = session.id
        let open: SessionManager.ActionReceipt
        do {
            open = try await manager.perform(.open, on: session.id, input: .open(request.requirements))
        } catch {
            try? await manager.deleteSession(session.id, token: token)
            throw error
        }
        status.progress.message = "Opening the internal session '\(request.sessionName)' from image '\(status.image)'"
        remember(status)
        logger.info("template warm-up begun", metadata: ["template": "\(request.name)", "session": "\(session.id)"])
        jobsContinuation.yield(Job(request: request, session: session.id, token: token, open: open.operation.id))
        return status
    }

    // MARK: Work

    private func carryOut(_ job: Job) async {
        let name = job.request.name
        do throws(VMSessionError) {
            try await wait(for: job.open, what: "opening the session")
            step(name, 1, "Booting image '\(job.request.requirements.version)' with the warm-up user-data")
            let start = try await manager.perform(
                .start, on: job.session, input: .start(userData: job.request.userData, parameters: job.request.parameters))
            let began = clock.now
            try await wait(for: start.operation.id, what: "starting the VM")
            step(name, 2, "Waiting for the guest's ready line (\(ReadyMarkerScanner.marker)) on its console")
            try await waitForReady(job, deadline: began.advanced(by: job.request.readyTimeout))
            step(name, 3, "Guest ready; making template '\(name)'")
            let made = try await templates.create(name, from: job.session)
            try await wait(for: made.operation.id, what: "making the template")
            step(name, 4, "Template '\(name)' made; closing the internal session")
            try await closeSession(job)
            finish(name, error: nil)
            logger.info("template warm-up done", metadata: ["template": "\(name)"])
        } catch {
            await closeSessionQuietly(job)
            finish(name, error: error)
            logger.warning("template warm-up failed", metadata: ["template": "\(name)", "error": "\(error)"])
        }
    }

    /// Waits for one of the internal session's operations to end; throws its error if it failed.
    private func wait(for operation: OperationID, what: String) async throws(VMSessionError) {
        while true {
            let current = try await manager.waitForOperation(operation, timeout: .seconds(300))
            if Task.isCancelled { throw VMSessionError(.unavailable, "The daemon is shutting down; the warm-up stopped while \(what).") }
            switch current.status {
            case .running: continue
            case .succeeded: return
            case .failed:
                let error = current.error
                throw VMSessionError(
                    error.map { .init($0.code, legacyCode: $0.legacyCode) } ?? .internalError,
                    "The warm-up failed while \(what): \(error?.message ?? "unknown error")")
            }
        }
    }

    /// Reads the session's console log as it grows until the ready line, the deadline, or the VM stops running.
    private func waitForReady(_ job: Job, deadline: ContinuousClock.Instant) async throws(VMSessionError) {
        let log = try await manager.consoleEndpoints(of: job.session).log
        var scanner = ReadyMarkerScanner()
        var offset: UInt64 = 0
        while true {
            let from = offset
            let (bytes, next) = await offPool { () -> ([UInt8], UInt64) in Self.read(log, from: from) }
            offset = next
            if scanner.feed(bytes) { return }
            let state = try manager.session(job.session).state
            guard state == .running else {
                throw VMSessionError(
                    .invalidState, "The warm-up's VM is \(state.rawValue), not running, before it printed \(ReadyMarkerScanner.marker).")
            }
            guard clock.now < deadline else {
                throw VMSessionError(
                    .guestNotReady,
                    "The guest did not print the line \(ReadyMarkerScanner.marker) on its serial console within "
                        + "\(job.request.readyTimeout.components.seconds) s of its start (readyTimeout); no template was made.")
            }
            do { try await clock.sleep(for: pollInterval) } catch {
                throw VMSessionError(.unavailable, "The daemon is shutting down; the warm-up stopped while waiting for the guest.")
            }
        }
    }

    /// What the file holds from `offset` on (at most 1 MiB), and where the next read begins.
    static func read(_ path: String, from offset: UInt64) -> ([UInt8], UInt64) {
        guard let handle = FileHandle(forReadingAtPath: path) else { return ([], offset) }
        defer { try? handle.close() }
        guard (try? handle.seek(toOffset: offset)) != nil, let data = try? handle.read(upToCount: 1 << 20) else { return ([], offset) }
        return (Array(data), offset + UInt64(data.count))
    }

    private func closeSession(_ job: Job) async throws(VMSessionError) {
        if try manager.session(job.session).state != .closed {
            let close = try await manager.perform(.close, on: job.session)
            try await wait(for: close.operation.id, what: "closing the internal session")
        }
        try await manager.deleteSession(job.session, token: job.token)
    }

    /// After a failure: the internal session goes, whatever state it is in; what cannot be done is logged.
    private func closeSessionQuietly(_ job: Job) async {
        // An operation still under way on it (a start cut by the timeout cannot be: it ended) is waited for first.
        if let operation = try? manager.session(job.session).operationID {
            _ = try? await manager.waitForOperation(operation, timeout: .seconds(300))
        }
        do throws(VMSessionError) {
            try await closeSession(job)
        } catch {
            logger.warning(
                "could not remove a failed warm-up's session", metadata: ["session": "\(job.session)", "error": "\(error)"])
        }
    }

    // MARK: Status

    private func step(_ name: String, _ done: Int, _ message: String) {
        guard var status = warmUps[name] else { return }
        status.progress = .init(done: done, total: TemplateWarmUpStatus.steps, message: message)
        status.updatedAt = Date()
        warmUps[name] = status
    }

    private func finish(_ name: String, error: VMSessionError?) {
        guard var status = warmUps[name] else { return }
        status.status = error == nil ? .succeeded : .failed
        status.error = error.map(SessionOperation.ErrorInfo.init)
        if error == nil {
            status.progress = .init(done: TemplateWarmUpStatus.steps, total: TemplateWarmUpStatus.steps, message: "Template '\(name)' ready")
        }
        status.updatedAt = Date()
        warmUps[name] = status
    }

    private func remember(_ status: TemplateWarmUpStatus) {
        warmUps[status.name] = status
        let finished = warmUps.values.filter { $0.status != .running }.sorted { $0.updatedAt < $1.updatedAt }
        for old in finished.prefix(max(0, finished.count - Self.keptFinished)) { warmUps[old.name] = nil }
    }
}
