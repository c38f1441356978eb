import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import VMSessionCore
import VMSessionDaemon
import VMSessionHypervisor

/// Builds the HTTP side of the daemon. `main` and the tests share these functions, so the tests run the
/// very router the daemon serves.
public enum VMSessionAPI {
    public static let version = "0.1.0"

    /// Every route (the API, `vmsession.js` and the daemon's page), behind the Host guard (DNS rebinding),
    /// the Origin guard (approved web pages only, with CORS) and the error responder (one JSON error shape),
    /// in that order.
    public static func buildRouter(
        manager: SessionManager, events: EventHub, origins: OriginRegistry, hypervisor: HypervisorDescription,
        controller: IdleController, mode: DaemonMode? = nil,
        budget: ConnectionBudget = .init(connections: 1024, eventStreams: 768)
    ) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: HostGuard())
        router.add(middleware: OriginGuard(origins: origins))
        router.add(middleware: ErrorResponder())
        let methods = MethodGuard<BasicRequestContext>.Table()
        router.add(middleware: MethodGuard(table: methods))
        var sessions = SessionsController(manager: manager, hypervisor: hypervisor, mode: mode)
        sessions.idleSource = { controller.idleSource() }
        sessions.addRoutes(to: router)
        EventsController(sessions: sessions, events: events, limiter: StreamLimiter(total: budget.eventStreams, perOrigin: 64))
            .addRoutes(to: router)
        AdminController(manager: manager, origins: origins).addRoutes(to: router)
        ImagesController(manager: manager).addRoutes(to: router)
        ContractController().addRoutes(to: router)
        WebController().addRoutes(to: router)
        DaemonController(controller: controller, manager: manager).addRoutes(to: router)
        methods.set(router.routes.map { (path: $0.path, method: $0.method) })
        return router
    }

    /// The HTTP server as a service, bound to `host:port`. `onListening` gets the port actually bound
    /// (useful with port 0). Past `budget.connections` open connections it stops accepting until one closes:
    /// the connections it has keep being served, and new clients wait in the listen backlog.
    public static func buildApplication(
        router: Router<BasicRequestContext>, host: String, port: Int, logger: Logger,
        budget: ConnectionBudget = .init(connections: 1024, eventStreams: 768),
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        Application(
            router: router,
            // Idle keep-alive connections close after a minute; a response in progress (an event stream) is never cut.
            server: .http1(configuration: .init(idleTimeout: .seconds(60))),
            configuration: .init(
                address: .hostname(host, port: port), serverName: "vmsessiond",
                availableConnectionsDelegate: MaximumAvailableConnections(budget.connections, logger: logger)),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
            logger: logger)
    }
}
