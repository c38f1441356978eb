import Hummingbird
import VMSessionCore
import VMSessionDaemon

/// The daemon-wide routes of the idle-aware controller: its status, the idle threshold, and activity
/// reports from a headless host. Reading is open to every approved page (the plugin's `isRunning`,
/// `isSystemIdle`, `idleTime`); changing needs the admin token (the plugin's "privileged domain").
struct DaemonController {
    let controller: IdleController
    let manager: SessionManager

    func addRoutes(to router: Router<APIRequestContext>) {
        router.get("/api/v1/daemon", use: show)
        router.put("/api/v1/daemon", use: update)
        router.post("/api/v1/daemon/activity", use: reportActivity)
    }

    @Sendable func show(_ request: Request, context: APIRequestContext) async throws -> Response {
        JSONResponse.make(await controller.status())
    }

    struct SettingsRequest: Decodable {
        let idleTime: Int
    }

    @Sendable func update(_ request: Request, context: APIRequestContext) async throws -> Response {
        try await manager.authorizeAdmin(token: SessionsController.token(in: request))
        var request = request
        let body = try await RequestBody.decode(SettingsRequest.self, from: &request, allowed: ["idleTime"])
        return JSONResponse.make(try await controller.setIdleTime(body.idleTime))
    }

    struct ActivityRequest: Decodable {
        let active: Bool
    }

    @Sendable func reportActivity(_ request: Request, context: APIRequestContext) async throws -> Response {
        try await manager.authorizeAdmin(token: SessionsController.token(in: request))
        var request = request
        let body = try await RequestBody.decode(ActivityRequest.self, from: &request, allowed: ["active"])
        return JSONResponse.make(await controller.report(active: body.active))
    }
}
