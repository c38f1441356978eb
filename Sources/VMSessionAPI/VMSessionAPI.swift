import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import ServiceLifecycle
import VMSessionCore
import VMSessionDaemon
import VMSessionHypervisor
import VMSessionMetrics

/// Builds the HTTP side of the daemon. `main` and the tests share these functions, so the tests run the
/// very router the daemon serves.
public enum VMSessionAPI {
    public static let version = "0.1.0"
    /// The `Server` header of every answer.
    static let serverName = "vmsessiond"

    /// The routes of the daemon: `http` serves every request, `webSocket` decides WebSocket upgrades.
    ///
    /// An upgrade request passes the `webSocket` router first, behind the same guards as everything else.
    /// Only when a route there accepts it is the connection upgraded. A refused upgrade (no token, an origin
    /// the user did not approve) is answered `400` by hummingbird-websocket itself, with no body; the same
    /// URL as a plain GET reaches `http`, whose route of that path answers with the JSON error that says why
    /// (a browser's WebSocket API shows neither, so `vmsession.js` asks that way when a connection fails).
    public struct Routers {
        public let http: Router<APIRequestContext>
        public let webSocket: Router<APIRequestContext>
        /// Open event streams and display viewers, which the API layer counts (for `/metrics`).
        let clients: @Sendable () -> (eventStreams: Int, displays: Int)
        /// The hot read GETs answered below Hummingbird's async layer, from the same functions as `http`'s routes
        /// (``ReadFastPath``); used by ``VMSessionAPI/buildApplication(routers:host:port:logger:budget:readFastPath:eventsFastPath:onListening:)``.
        public let readFastPath: ReadFastPath
        /// The event streams served on the event loops, from the same functions as `http`'s event routes
        /// (``EventStreamFastPath``); used by `buildApplication` when `eventsFastPath` is on.
        public let eventsFastPath: EventStreamFastPath
    }

    /// Every route (the API, `vmsession.js` and the daemon's page, the console and display WebSockets, `/metrics`),
    /// behind the metrics middleware (``HTTPMetrics``: every HTTP request counted and timed), the security headers every
    /// response carries, the Host guard (DNS rebinding), the Origin guard (approved web pages only, with CORS)
    /// and the error responder (one JSON error shape), in that order. `metrics` reads and counts the series of
    /// `GET /metrics` (nil: a collector of its own, without the hypervisor's statistics).
    public static func buildRouters(
        manager: SessionManager, events: EventHub, origins: OriginRegistry, hypervisor: HypervisorDescription,
        controller: IdleController, mode: DaemonMode? = nil,
        budget: ConnectionBudget = .init(connections: 1024, eventStreams: 768), guestProxy: GuestProxyPolicy = .defaults,
        consoles: ConsoleHub? = nil, metrics: MetricsCollector? = nil, snapshots: SnapshotService? = nil,
        templates: TemplateService? = nil, hosts: HostRegistry? = nil, warmUps: TemplateWarmUp? = nil
    ) -> Routers {
        let collector = metrics ?? MetricsCollector(
            metrics: DaemonMetrics(), manager: manager, hypervisor: nil, controller: controller, consoles: consoles)
        let router = Router(context: APIRequestContext.self)
        let httpMetrics = HTTPMetrics<APIRequestContext>()
        router.add(middleware: httpMetrics)
        router.add(middleware: SecurityHeaders())
        router.add(middleware: HostGuard())
        router.add(middleware: OriginGuard(origins: origins, metrics: collector.metrics))
        router.add(middleware: ErrorResponder())
        router.add(middleware: CredentialsReader(access: manager.access, origins: origins))
        let methods = MethodGuard<APIRequestContext>.Table()
        router.add(middleware: MethodGuard(table: methods))
        let webSocket = Router(context: APIRequestContext.self)
        webSocket.add(middleware: SecurityHeaders())
        webSocket.add(middleware: HostGuard())
        webSocket.add(middleware: OriginGuard(origins: origins, metrics: collector.metrics))
        webSocket.add(middleware: ErrorResponder())
        webSocket.add(middleware: CredentialsReader(access: manager.access, origins: origins))
        var sessions = SessionsController(manager: manager, hypervisor: hypervisor, mode: mode)
        sessions.idleSource = { controller.idleSource() }
        sessions.hosts = hosts
        let templates = templates ?? TemplateService(manager: manager)
        sessions.templates = templates
        sessions.addRoutes(to: router)
        GuestProxyController(sessions: sessions, policy: guestProxy, metrics: collector.metrics).addRoutes(to: router)
        let streams = StreamLimiter(total: budget.eventStreams, perOrigin: 64)
        SnapshotsController(sessions: sessions, service: snapshots ?? SnapshotService(manager: manager)).addRoutes(to: router)
        let eventsController = EventsController(sessions: sessions, events: events, limiter: streams)
        eventsController.addRoutes(to: router)
        let admin = AdminController(manager: manager, origins: origins, metrics: collector.metrics, views: sessions.views, hosts: hosts)
        admin.addRoutes(to: router)
        ImagesController(manager: manager, templates: templates).addRoutes(to: router)
        TemplatesController(manager: manager, service: templates, warmUps: warmUps ?? TemplateWarmUp(manager: manager, templates: templates))
            .addRoutes(to: router)
        // The daemon always has a registry; a test router without one serves no /api/v1/hosts.
        if let hosts { HostsController(registry: hosts).addRoutes(to: router) }
        ContractController().addRoutes(to: router)
        WebController().addRoutes(to: router)
        NoVNCAssets().addRoutes(to: router)
        let displays = DisplayViewers()
        DisplayController(manager: manager, viewers: displays).addRoutes(http: router, webSocket: webSocket)
        MetricsController(collector: collector) { (streams.openCount, displays.total) }.addRoutes(to: router)
        // A hub that is not run as a service (some tests) shows the console but carries no keystrokes.
        ConsoleController(manager: manager, hub: consoles ?? ConsoleHub(framing: .webSocket, logger: Logger(label: "vmsessiond.console")))
            .addRoutes(http: router, webSocket: webSocket)
        XtermAssets().addRoutes(to: router)
        DaemonController(controller: controller).addRoutes(to: router)
        let routes = router.routes.map { (path: $0.path, method: $0.method) }
        methods.set(routes)
        let fastPath = ReadFastPath(
            sessions: sessions, admin: admin, access: manager.access, origins: origins, originMetrics: collector.metrics,
            http: httpMetrics.series, routes: routes)
        let eventsFastPath = EventStreamFastPath(
            events: events, access: manager.access, origins: origins, originMetrics: collector.metrics, http: httpMetrics.series,
            limiter: streams, heartbeat: eventsController.heartbeat, routes: routes)
        return Routers(
            http: router, webSocket: webSocket, clients: { (streams.openCount, displays.total) }, readFastPath: fastPath,
            eventsFastPath: eventsFastPath)
    }

    /// The HTTP routes alone, for tests that need no WebSocket.
    public static func buildRouter(
        manager: SessionManager, events: EventHub, origins: OriginRegistry, hypervisor: HypervisorDescription,
        controller: IdleController, mode: DaemonMode? = nil,
        budget: ConnectionBudget = .init(connections: 1024, eventStreams: 768), guestProxy: GuestProxyPolicy = .defaults,
        metrics: MetricsCollector? = nil, hosts: HostRegistry? = nil
    ) -> Router<APIRequestContext> {
        buildRouters(
            manager: manager, events: events, origins: origins, hypervisor: hypervisor, controller: controller, mode: mode,
            budget: budget, guestProxy: guestProxy, metrics: metrics, hosts: hosts
        ).http
    }

    /// The scrape listener's routes (`metricsListen`): `GET /metrics` without a token, and nothing else (a JSON
    /// 404 or 405). `routers` are the daemon's, whose counts the scrape reads.
    public static func buildScrapeRouter(metrics: MetricsCollector, clientsOf routers: Routers) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: HTTPMetrics())
        router.add(middleware: SecurityHeaders())
        router.add(middleware: ScrapeHostGuard())
        router.add(middleware: ErrorResponder())
        MetricsController(collector: metrics, clients: routers.clients).addOpenRoute(to: router)
        return router
    }

    /// A plain HTTP server for a router that serves no WebSocket (the scrape listener), bound to `host:port`.
    public static func buildApplication(
        router: Router<BasicRequestContext>, host: String, port: Int, logger: Logger,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        Application(
            router: router, server: .http1(configuration: .init(idleTimeout: .seconds(60))),
            configuration: .init(address: .hostname(host, port: port), serverName: serverName),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
            logger: logger)
    }

    /// The HTTP server as a service, bound to `host:port`. `onListening` gets the port actually bound
    /// (useful with port 0). Past `budget.connections` open connections it stops accepting until one closes:
    /// the connections it has keep being served, and new clients wait in the listen backlog. With `readFastPath`
    /// (the default) every connection answers the hot read GETs itself (``ReadFastPath``); without, the router
    /// answers every request (the same answers, the way the tests compare them). With `eventsFastPath` (the default)
    /// every connection serves event streams on its event loop (``EventStreamFastPath``); without, the router's
    /// ``EventsController`` does (the same bytes).
    public static func buildApplication(
        routers: Routers, host: String, port: Int, logger: Logger,
        budget: ConnectionBudget = .init(connections: 1024, eventStreams: 768), readFastPath: Bool = true, eventsFastPath: Bool = true,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let fastPath: ReadFastPath? = readFastPath ? routers.readFastPath : nil
        let streams: EventStreamFastPath? = eventsFastPath ? routers.eventsFastPath : nil
        // In this order: the read fast path's installer puts its handler behind the state handler first, the event
        // streams' installer puts its own behind that.
        let installers: @Sendable () -> [any RemovableChannelHandler] = {
            (fastPath.map { [ReadFastPathInstaller($0)] } ?? []) + (streams.map { [EventStreamInstaller($0)] } ?? [])
        }
        return Application(
            router: routers.http,
            // Idle keep-alive connections close after a minute; a response in progress (an event stream) is never cut.
            server: .http1WebSocketUpgrade(
                webSocketRouter: routers.webSocket,
                configuration: .init(
                    http1: .init(additionalChannelHandlers: installers(), idleTimeout: .seconds(60)),
                    ws: webSocketConfiguration)),
            configuration: .init(
                address: .hostname(host, port: port), serverName: serverName,
                availableConnectionsDelegate: MaximumAvailableConnections(budget.connections, logger: logger)),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
            logger: logger)
    }

    /// Frames are bounded before they are buffered (a larger one closes the connection with 1009, "message too
    /// big"); a peer that stops answering pings is dropped.
    static let webSocketConfiguration = WebSocketServerConfiguration(
        maxFrameSize: 1 << 16, autoPing: .enabled(timePeriod: .seconds(30)), closeTimeout: .seconds(5))
}
