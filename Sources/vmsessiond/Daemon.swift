import Foundation
import Hummingbird
import Logging
import Metrics
import ServiceLifecycle
import UnixSignals
import VMSessionAPI
import VMSessionCore
import VMSessionDaemon
import VMSessionHypervisor
import VMSessionIdle
import VMSessionMetrics
import VMSessionStore

/// Wires the daemon together: state directory and its lock, store, hypervisor, session manager, the
/// idle-aware controller and the HTTP server, all run in one ServiceGroup that ends them on SIGTERM/SIGINT.
struct Daemon {
    let settings: DaemonSettings
    let logger: Logger

    func run() async throws {
        let state = settings.stateDirectory
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let lock = try StateDirectoryLock(directory: state)
        defer { lock.release() }

        let store = try SessionStore(path: state + "/vmsessiond.sqlite")
        let hypervisor = try LibvirtHypervisor(
            configuration: .init(
                uri: settings.libvirtURI, stateDirectory: state, accelerator: settings.accelerator,
                capMechanism: settings.capMechanism, cgroupDirectory: settings.cgroupDirectory),
            logger: logger)
        logger.info(
            "hypervisor ready",
            metadata: ["uri": "\(hypervisor.description.uri)", "driver": "\(hypervisor.description.driver)",
                       "accelerator": "\(hypervisor.description.accelerator)"])
        let mode = hypervisor.mode
        logger.notice(
            "running in \(mode.mode) mode",
            metadata: ["libvirt": "\(mode.libvirt)", "capMechanism": "\(mode.capMechanism.rawValue)", "capDetail": "\(mode.capDetail)"])
        // One registry for the process: the daemon's parts count into it, and so does the HTTP
        // middleware (HTTPMetrics), through swift-metrics' process-wide backend.
        let metrics = DaemonMetrics()
        MetricsSystem.bootstrap(metrics.factory)
        let events = EventHub(store: store, metrics: metrics)
        let adminToken = try AdminToken.load(stateDirectory: state)
        logger.info("admin token ready", metadata: ["file": "\(adminToken.path)"])
        let origins = try OriginRegistry(store: store, maximumPending: settings.maximumPendingOrigins, logger: logger)
        let images = ImageStore(
            store: store, catalog: ImageCatalog(applianceDirectory: settings.applianceDirectory), directory: state + "/images",
            downloader: ImageDownloader(logger: logger), logger: logger)
        let manager = SessionManager(
            store: store, events: events, hypervisor: hypervisor, images: images,
            configuration: .init(
                stopGrace: .seconds(settings.stopGraceSeconds), quota: settings.quota,
                egress: { [defaultEgress = settings.guestEgress] client in
                    WebOrigin(client).flatMap { origins.egress(of: $0) } ?? defaultEgress
                }),
            adminToken: adminToken, metrics: metrics, logger: logger)
        // Sessions are reconciled before the first request is served.
        try await manager.reconcile()
        let snapshots = SnapshotService(manager: manager, logger: logger)
        try await snapshots.reconcile()
        let templates = TemplateService(manager: manager, logger: logger)
        try await templates.reconcile()
        let warmUps = TemplateWarmUp(manager: manager, templates: templates, logger: logger)
        let source = DesktopIdleSource(
            variables: settings.sessionVariables, preference: settings.idleSource, factory: DesktopIdleSource.standard(x11: settings.x11Idle))
        let controller = try IdleController(
            manager: manager, events: events, store: store, source: source.kind == nil ? nil : source,
            noSourceReason: "Idle detection is off (idleSource: none). "
                + "Controlled VMs run at their max unless a local program reports activity (POST /api/v1/daemon/activity).",
            idleTime: settings.idleTime, logger: logger)
        logger.notice("idle source", metadata: ["source": "\(source.name)", "why": "\(source.reason)"])
        let descriptors = DescriptorLimit.raiseToHard()
        let budget = ConnectionBudget.fitting(
            descriptorLimit: descriptors, maxConnections: settings.maxConnections, maxEventStreams: settings.maxEventStreams)
        logger.info(
            "connection budget",
            metadata: ["descriptors": "\(descriptors)", "connections": "\(budget.connections)", "eventStreams": "\(budget.eventStreams)"])
        let consoles = ConsoleHub(limits: settings.console, logger: logger)
        // Sessions all run on the local host until placement comes (issue 22); remote hosts hold none yet.
        let hosts = try HostRegistry(
            store: store, localURI: hypervisor.description.uri, configured: settings.hosts,
            sessionCount: { name in
                name == HostDefinition.localName ? manager.readModel.allSessions().sessions.filter { $0.state != .closed }.count : 0
            }, logger: logger)
        let collector = MetricsCollector(
            metrics: metrics, manager: manager, hypervisor: hypervisor, controller: controller, consoles: consoles, hosts: hosts)
        let routers = VMSessionAPI.buildRouters(
            manager: manager, events: events, origins: origins, hypervisor: hypervisor.description,
            controller: controller, mode: mode, budget: budget, consoles: consoles, metrics: collector, snapshots: snapshots,
            templates: templates, hosts: hosts, warmUps: warmUps)
        let host = settings.host
        // Known before the first probe can announce a guest's apiURL (port 0 is known once bound, below).
        if settings.port != 0 { manager.address.listening(host: host, port: settings.port) }
        let logger = self.logger
        let app = VMSessionAPI.buildApplication(routers: routers, host: host, port: settings.port, logger: logger, budget: budget) { port in
            let shown = host.contains(":") ? "[\(host)]" : host
            manager.address.listening(host: host, port: port)
            logger.notice("vmsessiond listening on http://\(shown):\(port)", metadata: ["state": "\(state)"])
            SystemdNotifier.notify("READY=1\nSTATUS=listening on http://\(shown):\(port)")
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let listen = settings.metricsListen {
            let (metricsHost, metricsPort) = listen
            services.append(.init(service: VMSessionAPI.buildApplication(
                router: VMSessionAPI.buildScrapeRouter(metrics: collector, clientsOf: routers), host: metricsHost, port: metricsPort,
                logger: logger
            ) { port in
                let shown = metricsHost.contains(":") ? "[\(metricsHost)]" : metricsHost
                logger.notice("metrics served without a token on http://\(shown):\(port)/metrics")
            }))
        }
        var configuration = ServiceGroupConfiguration(
                services: services + [
                    .init(service: manager), .init(service: images), .init(service: GuestAPIMonitor(manager: manager, logger: logger)),
                    .init(service: controller), .init(service: consoles), .init(service: HostMonitor(registry: hosts, logger: logger)),
                    .init(service: warmUps),
                    .init(service: ConsoleLogTrimmer(manager: manager, bound: settings.consoleLog, logger: logger)),
                    .init(service: Housekeeper(store: store, manager: manager, policy: settings.retention, logger: logger)),
                    .init(service: app),
                    .init(service: StartupMemoryRelease(logger: logger)),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger)
        // Past the grace, graceful shutdown becomes cancellation (see run(_:grace:logger:) for the last resort).
        configuration.maximumGracefulShutdownDuration = .seconds(settings.shutdownGraceSeconds)
        let group = ServiceGroup(configuration: configuration)
        try await Self.run(group, grace: .seconds(settings.shutdownGraceSeconds), logger: logger)
        SystemdNotifier.notify("STOPPING=1")
        logger.notice("vmsessiond stopped")
    }

    /// Runs the service group, and bounds its shutdown: from the first SIGTERM/SIGINT, services and
    /// connections have `grace` to end (viewers, event streams and proxied bodies end at once; an operation
    /// under way is left pending and settled at the next start), then the group cancels them; should anything
    /// still ignore that, the process exits `lastResort` later, as it would on a normal stop. VMs keep running
    /// either way: QEMU does not depend on the daemon's process.
    static func run(_ group: ServiceGroup, grace: Duration, logger: Logger) async throws {
        let lastResort: Duration = .seconds(3)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            tasks.addTask {
                for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                    logger.notice("stopping", metadata: ["signal": "\(signal)", "grace": "\(grace)"])
                    try await Task.sleep(for: grace + lastResort)
                    logger.critical("vmsessiond did not stop within its shutdown grace; exiting now (VMs keep running)")
                    exit(0)
                }
            }
            // The group's end (after a signal or a failure) ends the watch too.
            try await tasks.next()
            tasks.cancelAll()
        }
    }
}
