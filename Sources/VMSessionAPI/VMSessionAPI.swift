import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import VMSessionDaemon
import VMSessionHypervisor

/// Builds the HTTP side of the daemon. `main` and the tests share these functions, so the tests run the
/// very router the daemon serves.
public enum VMSessionAPI {
    public static let version = "0.1.0"

    /// Every route, behind the error responder and the Host guard.
    public static func buildRouter(
        manager: SessionManager, events: EventHub, hypervisor: HypervisorDescription, controller: IdleController,
        adminAccess: AdminAccess = .localProgramsOnly
    ) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: ErrorResponder())
        router.add(middleware: HostGuard())
        let sessions = SessionsController(manager: manager, hypervisor: hypervisor)
        sessions.addRoutes(to: router)
        EventsController(sessions: sessions, events: events).addRoutes(to: router)
        DaemonController(controller: controller, access: adminAccess).addRoutes(to: router)
        return router
    }

    /// The HTTP server as a service, bound to `host:port`. `onListening` gets the port actually bound
    /// (useful with port 0).
    public static func buildApplication(
        router: Router<BasicRequestContext>, host: String, port: Int, logger: Logger,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "vmsessiond"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
            logger: logger)
    }
}
