import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import VMSessionCore
import VMSessionIdle
import VMSessionStore

/// The idle-aware execution-cap controller: lends the desktop's idle CPU to controlled sessions and takes
/// it back the moment the user touches the mouse (issue #4). A `Service` in the daemon's group.
///
/// It reads idle time from an ``IdleSource`` (the session's: X, Wayland, Mutter or logind) and from what a local program
/// reports, turns it into idle/active with an ``IdleDetector`` (hysteresis, and when to look next), and
/// applies ``ControllerPolicy`` through the ``SessionManager`` (the one owner of session state).
///
/// Waiting costs next to nothing: while the user is active it sleeps until the moment idleness could
/// begin (`idleTime − idle`); only while idle, when the CPU is lent anyway, it polls every
/// ``IdleDetector/idlePollInterval`` so that input is noticed within 250 ms. Any event that may change a
/// decision (a session starts, stops, is (un)controlled, an operation ends) and any change of settings
/// rings a doorbell that wakes it at once.
public actor IdleController: Service {
    public static let idleTimeKey = "idleTime"
    /// The stored setting that says whether the controller acts (`stop()` of the plugin's daemon object).
    public static let enabledKey = "controllerEnabled"
    public static let idleTimeRange = 1...86400
    /// How long a step that failed is not tried again (unless the session changes meanwhile).
    public static let retryAfterFailure: Duration = .seconds(10)
    private let retryAfterFailure: Duration
    /// How long a step that the daemon does not support here is skipped: as long as the daemon runs.
    static let neverRetry: Duration = .seconds(10 * 365 * 86400)

    private let manager: SessionManager
    private let events: EventHub
    private let store: SessionStore
    private let source: (any IdleSource)?
    private let noSourceReason: String
    private let clock: any Clock<Duration>
    private let logger: Logger

    private var idleTime: Int
    private var detector = IdleDetector()
    private var detection: DaemonStatus.Detection = .unavailable
    private var detectionReason: String?
    private var isRunning = false
    /// Whether the controller acts on the sessions that opted in; a privileged page or the admin can stop
    /// and start it (stored, so it stays stopped across restarts). Stopped, it leaves their caps as they are.
    private var enabled = true
    private var lastChange: Date?
    private var started = false
    /// A local program's report: the moment of its last reported input, or nil after "idle now".
    private var reported: (active: Bool, at: ContinuousClock.Instant)?
    private var failures: [SessionID: (step: ControllerStep, retryAt: ContinuousClock.Instant)] = [:]
    private let doorbell = Mutex<AsyncStream<Void>.Continuation?>(nil)

    /// `source` is nil when idle detection is off; `noSourceReason` then says why. `idleTime` is the
    /// configured default, used until `PUT /api/v1/daemon` stores another.
    public init(
        manager: SessionManager, events: EventHub, store: SessionStore, source: (any IdleSource)?, noSourceReason: String,
        idleTime: Int, clock: any Clock<Duration> = ContinuousClock(), retryAfterFailure: Duration = IdleController.retryAfterFailure,
        logger: Logger
    ) throws(VMSessionError) {
        self.manager = manager
        self.retryAfterFailure = retryAfterFailure
        self.events = events
        self.store = store
        self.source = source
        self.noSourceReason = noSourceReason
        self.clock = clock
        self.logger = logger
        let stored: String?
        do { stored = try store.setting(Self.idleTimeKey) } catch {
            throw VMSessionError(.ioError, "Cannot read the daemon's settings.", cause: error)
        }
        self.idleTime = stored.flatMap(Int.init).flatMap { Self.idleTimeRange.contains($0) ? $0 : nil } ?? idleTime
        self.detectionReason = source == nil ? noSourceReason : nil
        let storedEnabled: String?
        do { storedEnabled = try store.setting(Self.enabledKey) } catch {
            throw VMSessionError(.ioError, "Cannot read the daemon's settings.", cause: error)
        }
        self.enabled = storedEnabled != "false"
    }

    // MARK: Service

    public func run() async throws {
        isRunning = true
        defer { isRunning = false }
        let updates = events.subscribe(to: nil)
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await event in updates where Self.mayChangeDecision(event.kind) { self.nudge() }
                }
                if let changes = self.source?.changes {
                    // A source that announces input (a Wayland compositor) wakes the controller at once.
                    group.addTask { for await _ in changes { self.nudge() } }
                }
                await self.loop()
                group.cancelAll()
            }
        }
    }

    /// Decide, act, then wait for the next moment something could change or for the doorbell.
    private func loop() async {
        let clock = self.clock
        while !Task.isCancelled {
            // The doorbell is set up before deciding, so a ring during the decision is not lost.
            let (rings, ring) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
            doorbell.withLock { $0 = ring }
            let wait = await tick()
            await withTaskGroup(of: Void.self) { group in
                group.addTask { try? await clock.sleep(for: wait) }
                group.addTask { for await _ in rings { break } }
                _ = await group.next()
                group.cancelAll()
            }
            ring.finish()
        }
    }

    /// Wakes the controller now (settings or a session changed).
    public nonisolated func nudge() {
        // The continuation is taken under the lock and rung outside it (never a yield under a lock).
        let ring = doorbell.withLock { $0 }
        ring?.yield()
    }

    static func mayChangeDecision(_ kind: SessionEvent.Kind) -> Bool {
        switch kind {
        case .stateChanged, .daemonControlChanged, .operationCompleted, .operationFailed: true
        default: false
        }
    }

    // MARK: Deciding

    /// One round: read the idle state, announce a change, apply the policy; returns how long to wait.
    func tick() async -> Duration {
        let threshold = Duration.seconds(idleTime)
        let changed = await readIdleState(threshold: threshold)
        let idle = detector.isIdle
        if changed || !started {
            started = true
            lastChange = Date()
            logger.info("desktop \(idle ? "idle" : "active")", metadata: ["detection": "\(detection.rawValue)"])
            if changed { await manager.announceIdle(idle) }
        }
        var wait: Duration =
            switch detection {
            case .xscreensaver, .wayland, .mutter, .logind:
                // A source that announces input needs no polling while idle: its event rings the doorbell.
                detector.isIdle && source?.announcesInput == true ? .seconds(3600) : detector.nextCheck(idleTime: threshold)
            case .reported: detector.isIdle ? .seconds(3600) : detector.nextCheck(idleTime: threshold)
            case .unavailable: source == nil ? .seconds(3600) : IdleDetector.unavailableRetry
            }
        let now = ContinuousClock.now
        for session in enabled ? await manager.controlledSessions() : [] {
            let id = session.id
            let skipping: Set<ControllerStep> = failures[id].flatMap { $0.retryAt > now ? [$0.step] : nil } ?? []
            guard let outcome = await manager.applyController(idle: idle, to: id, skipping: skipping) else { continue }
            switch outcome.error?.code {
            case nil:
                failures[id] = nil
                logger.info("controller acted", metadata: ["session": "\(id)", "step": "\(outcome.step)", "idle": "\(idle)"])
            case .operationInProgress?:
                // A user's action runs; its end rings the doorbell and the step is tried again then.
                logger.debug("controller waits for an action", metadata: ["session": "\(id)"])
            case .notSupported?:
                // The daemon cannot cap here (no cap mechanism; chosen once at start): trying again cannot help,
                // so this step is not tried again, and said once. A different step (the desktop changed, the
                // session's caps changed) is tried as usual.
                if failures[id]?.step != outcome.step {
                    logger.warning(
                        "controller step not supported here; not retried",
                        metadata: ["session": "\(id)", "step": "\(outcome.step)", "error": "\(outcome.error.map(\.message) ?? "")"])
                }
                failures[id] = (outcome.step, now + Self.neverRetry)
            case .some:
                failures[id] = (outcome.step, now + retryAfterFailure)
                wait = min(wait, retryAfterFailure)
                logger.warning(
                    "controller step failed",
                    metadata: ["session": "\(id)", "step": "\(outcome.step)", "error": "\(outcome.error.map(\.message) ?? "")"])
            }
        }
        return wait
    }

    /// Reads the sources into the detector; returns whether idle/active changed.
    private func readIdleState(threshold: Duration) async -> Bool {
        var reading: UInt64?
        var sourceError: VMSessionError?
        if let source {
            do { reading = try await source.idleMilliseconds() } catch { sourceError = error }
        }
        // Re-read after the await: a report may have arrived meanwhile.
        let reportedReading: UInt64? = reported.flatMap { report in
            report.active ? IdleDetector.milliseconds(report.at.duration(to: .now)) : nil
        }
        if let reading {
            detection = DaemonStatus.Detection(source?.kind) ?? .unavailable
            detectionReason = nil
            return detector.observe(idleMilliseconds: min(reading, reportedReading ?? .max), idleTime: threshold)
        }
        detectionReason = sourceError.map(\.message) ?? noSourceReason
        if reported != nil {
            detection = .reported
            if let reportedReading { return detector.observe(idleMilliseconds: reportedReading, idleTime: threshold) }
            return detector.force(idle: true)
        }
        detection = .unavailable
        return detector.force(idle: true)
    }

    // MARK: Settings and reports

    public func status() -> DaemonStatus {
        DaemonStatus(
            isRunning: isRunning && enabled, isSystemIdle: detector.isIdle, idleTime: idleTime, idleDetection: detection,
            idleDetectionReason: detectionReason, display: (source as? DesktopIdleSource)?.display ?? (source as? X11IdleSource)?.display
                ?? (source as? XScreenSaverIdleSource)?.display,
            idleSource: idleSource(),
            lastChange: lastChange, idleSince: detector.isIdle ? lastChange : nil, activeSince: detector.isIdle ? nil : lastChange)
    }

    /// Changes the idle threshold (1–86400 s), stores it, and re-decides at once.
    public func setIdleTime(_ seconds: Int) throws(VMSessionError) -> DaemonStatus {
        guard Self.idleTimeRange.contains(seconds) else {
            throw VMSessionError(.invalidArgument, "'idleTime' must be between 1 and 86400 seconds; got \(seconds).")
        }
        do { try store.setSetting(Self.idleTimeKey, to: String(seconds)) } catch {
            throw VMSessionError(.ioError, "Cannot store the daemon's settings.", cause: error)
        }
        idleTime = seconds
        logger.info("idle time set", metadata: ["seconds": "\(seconds)"])
        nudge()
        return status()
    }

    /// Starts (`true`) or stops the controller's acting on sessions; stored.
    public func setEnabled(_ enabled: Bool) throws(VMSessionError) -> DaemonStatus {
        do { try store.setSetting(Self.enabledKey, to: enabled ? "true" : "false") } catch {
            throw VMSessionError(.ioError, "Cannot store the daemon's settings.", cause: error)
        }
        self.enabled = enabled
        logger.notice("idle-aware controller \(enabled ? "started" : "stopped")")
        nudge()
        return status()
    }

    /// Which source the idle time comes from and why it was chosen (nil: none configured).
    public nonisolated func idleSource() -> DaemonStatus.IdleSourceStatus? {
        source.map { DaemonStatus.IdleSourceStatus(name: $0.name, kind: $0.kind?.rawValue, reason: $0.reason) }
    }

    /// A local program reports the user's activity (input now) or idleness, for hosts with no X display
    /// (or in addition to it: input reported here counts as input).
    public func report(active: Bool) -> DaemonStatus {
        reported = (active, ContinuousClock.now)
        nudge()
        return status()
    }
}
