import Foundation
import Hummingbird
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
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
        let localHypervisor = try LibvirtHypervisor(
            configuration: .init(
                uri: settings.libvirtURI, stateDirectory: state, accelerator: settings.accelerator,
                capMechanism: settings.capMechanism, cgroupDirectory: settings.cgroupDirectory),
            logger: logger)
        logger.info(
            "hypervisor ready",
            metadata: ["uri": "\(localHypervisor.description.uri)", "driver": "\(localHypervisor.description.driver)",
                       "accelerator": "\(localHypervisor.description.accelerator)"])
        let mode = localHypervisor.mode
        logger.notice(
            "running in \(mode.mode) mode",
            metadata: ["libvirt": "\(mode.libvirt)", "capMechanism": "\(mode.capMechanism.rawValue)", "capDetail": "\(mode.capDetail)"])
        // One registry for the process: the daemon's parts count into it, and so does the HTTP
        // middleware (HTTPMetrics), through swift-metrics' process-wide backend.
        let metrics = DaemonMetrics()
        MetricsSystem.bootstrap(metrics.factory)
        let events = EventHub(store: store, metrics: metrics)
        // Every session's calls go through the runtimes, which route them to the hypervisor of the session's host:
        // the local one, and a remote host's while its connection is up, built here from the host's definition and
        // the monitor's connection (keepalive and deadline included). A host reached over SSH or TLS gets the remote
        // hypervisor (files as volumes, the console relayed); another libvirt on this machine (`qemu:///system`,
        // `test:///default`) a LibvirtHypervisor of its own with its state under hosts/NAME.
        let settings = self.settings
        let hypervisor = HostRuntimes(
            local: localHypervisor,
            factory: { [logger] host, connection throws(VMSessionError) -> any Hypervisor in
                if HostDefinition.isRemoteTransport(host.uri) {
                    return try RemoteLibvirtHypervisor(
                        host: host, connection: connection, stateDirectory: state + "/hosts/" + host.name, logger: logger)
                }
                return try LibvirtHypervisor(
                    configuration: .init(
                        uri: host.uri, stateDirectory: state + "/hosts/" + host.name, accelerator: settings.accelerator,
                        capMechanism: "libvirt"),
                    logger: logger)
            },
            announce: { [logger] ids, kind, payload in
                do {
                    _ = try events.record { try store.append(kind, payload: payload, forEach: ids, at: Date()) }
                } catch {
                    logger.error("could not record \(kind.rawValue)", metadata: ["error": "\(error)"])
                }
            }, logger: logger)
        // Where each session is, as the store says, before the first call for one.
        for entry in try store.allSessions() where entry.session.host != HostDefinition.localName {
            hypervisor.place(entry.session.id, on: entry.session.host, closed: entry.session.state == .closed)
        }
        // And where each template's files are.
        for stored in try store.templates() { hypervisor.placeTemplate(stored.template.name, on: stored.template.host) }
        let adminToken = try AdminToken.load(stateDirectory: state)
        logger.info("admin token ready", metadata: ["file": "\(adminToken.path)"])
        let origins = try OriginRegistry(store: store, maximumPending: settings.maximumPendingOrigins, logger: logger)
        let images = ImageStore(
            store: store, catalog: ImageCatalog(applianceDirectory: settings.applianceDirectory), directory: state + "/images",
            downloader: ImageDownloader(logger: logger), logger: logger)
        // The host registry is made before the manager (placement reads it); its session count reads the manager's.
        let counter = SessionCounter()
        let hosts = try HostRegistry(
            store: store, localURI: localHypervisor.description.uri, configured: settings.hosts,
            sessionCount: { name in counter.count(name) }, guestNetwork: { name in hypervisor.guestNetworkOffer(onHost: name) },
            logger: logger)
        let manager = SessionManager(
            store: store, events: events, hypervisor: hypervisor, images: images,
            configuration: .init(
                stopGrace: .seconds(settings.stopGraceSeconds), quota: settings.quota,
                egress: { [defaultEgress = settings.guestEgress] client in
                    WebOrigin(client).flatMap { origins.egress(of: $0) } ?? defaultEgress
                },
                place: { id, requirements, client, required throws(VMSessionError) in
                    // The admin's labels for the page's origin (never the page's own choice); none for local clients.
                    let labels = WebOrigin(client).map { origins.hostLabels(of: $0) } ?? [:]
                    let host = try hosts.place(requirements, labels: labels, serving: { hypervisor.serves($0) }, on: required)
                    hypervisor.place(id, on: host)
                    return host
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
        let consoles = ConsoleHub(limits: settings.console, framing: .webSocket, logger: logger)
        counter.read = { [readModel = manager.readModel] name in
            readModel.allSessions().sessions.filter { $0.state != .closed && $0.host == name }.count
        }
        let collector = MetricsCollector(
            metrics: metrics, manager: manager, hypervisor: hypervisor, controller: controller, consoles: consoles, hosts: hosts, store: store)
        let routers = VMSessionAPI.buildRouters(
            manager: manager, events: events, origins: origins, hypervisor: hypervisor.description,
            controller: controller, mode: mode, budget: budget, consoles: consoles, metrics: collector, snapshots: snapshots,
            templates: templates, hosts: hosts, warmUps: warmUps)
        let host = settings.host
        // Known before the first probe can announce a guest's apiURL (port 0 is known once bound, below).
        if settings.port != 0 { manager.address.listening(host: host, port: settings.port) }
        let logger = self.logger
        let app = VMSessionAPI.buildApplication(
            routers: routers, host: host, port: settings.port, logger: logger, budget: budget, readFastPath: settings.readFastPath,
            eventsFastPath: settings.eventsFastPath
        ) { port in
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
                    .init(service: controller), .init(service: consoles), .init(service: hypervisor), .init(service: HostMonitor(registry: hosts, runtimes: hypervisor, logger: logger)),
                    .init(service: warmUps),
                    .init(service: ConsoleLogTrimmer(manager: manager, bound: settings.consoleLog, logger: logger)),
                    .init(service: Housekeeper(store: store, manager: manager, policy: settings.retention, logger: logger)),
                    .init(service: StoreCheckpointer(store: store, metrics: metrics, logger: logger)),
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

/// The host registry's count of sessions per host, read from the session manager's read model once the manager
/// exists (the registry is made first, because placement, which the manager is given, reads it).
///
/// The closure is kept in a struct: a bare closure in the generic `Mutex` was re-abstracted through `withLock`'s
/// `inout` on every read, and each write-back wrapped it in two more thunks, so every `GET` of a session (whose view
/// names its host, with this count) got slower than the one before (`perf` on the release build: three quarters of
/// the CPU in nested reabstraction thunks after a minute of wrk).
private final class SessionCounter: Sendable {
    private struct Reader: Sendable {
        let count: @Sendable (String) -> Int
    }

    private let reader = Mutex<Reader?>(nil)

    var read: (@Sendable (String) -> Int)? {
        get { reader.withLock { $0?.count } }
        set { reader.withLock { $0 = newValue.map(Reader.init) } }
    }

    func count(_ host: String) -> Int { reader.withLock { $0 }?.count(host) ?? 0 }
}
