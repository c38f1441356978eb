import Foundation
import Hummingbird
import VMSessionCore
import VMSessionDaemon

/// The daemon-wide routes of the idle-aware controller: its status, the idle threshold, starting and
/// stopping it, and activity reports from a headless host.
///
/// Reading is open to every approved page (the plugin's `isRunning`, `isSystemIdle`, `idleTime`).
/// Changing is for the plugin's "privileged domain": an origin the user approved as privileged
/// (`vmsessionctl origins approve --privileged ORIGIN`), or the admin token.
struct DaemonController {
    let controller: IdleController

    func addRoutes(to router: Router<APIRequestContext>) {
        router.get("/api/v1/daemon", use: show)
        router.group("/api/v1/daemon", context: PrivilegedRequestContext.self).put(use: update)
        router.group("/api/v1/daemon/activity", context: AdminRequestContext.self).post(use: reportActivity)
    }

    /// The controller's status, and what this caller may do with it.
    struct AccessView: Encodable {
        let status: DaemonStatus
        /// Whether this caller may change the controller (a privileged origin, or the admin token).
        let privileged: Bool
        /// Where the daemon's executable is; shown to privileged callers only (the plugin's `.path`).
        let path: String?

        enum Keys: String, CodingKey { case privileged, path }

        func encode(to encoder: any Encoder) throws {
            try status.encode(to: encoder)
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(privileged, forKey: .privileged)
            try container.encodeIfPresent(path, forKey: .path)
        }
    }

    /// The running executable, resolved once.
    static let executablePath: String =
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments.first ?? "vmsessiond"

    @Sendable func show(_ request: Request, context: APIRequestContext) async throws -> Response {
        // Open to every approved page; only what it shows depends on the caller.
        let credentials = try context.presented()
        let privileged = credentials.isAdmin || credentials.isPrivilegedOrigin
        return JSONResponse.make(
            AccessView(status: await controller.status(), privileged: privileged, path: privileged ? Self.executablePath : nil))
    }

    struct SettingsRequest: Decodable {
        var idleTime: Int?
        /// false stops the controller acting on sessions, true starts it again (the plugin's stop() and start()).
        var running: Bool?
    }

    @Sendable func update(_ request: Request, context: PrivilegedRequestContext) async throws -> Response {
        var request = request
        let body = try await RequestBody.decode(SettingsRequest.self, from: &request, allowed: ["idleTime", "running"])
        guard body.idleTime != nil || body.running != nil else {
            throw VMSessionError(.invalidArgument, "Give 'idleTime' (seconds), 'running' (true or false), or both.")
        }
        if let idleTime = body.idleTime, !IdleController.idleTimeRange.contains(idleTime) {
            throw VMSessionError(.invalidArgument, "'idleTime' must be between 1 and 86400 seconds; got \(idleTime).")
        }
        var status = await controller.status()
        if let idleTime = body.idleTime { status = try await controller.setIdleTime(idleTime) }
        if let running = body.running { status = try await controller.setEnabled(running) }
        return JSONResponse.make(AccessView(status: status, privileged: true, path: Self.executablePath))
    }

    struct ActivityRequest: Decodable {
        let active: Bool
    }

    @Sendable func reportActivity(_ request: Request, context: AdminRequestContext) async throws -> Response {
        var request = request
        let body = try await RequestBody.decode(ActivityRequest.self, from: &request, allowed: ["active"])
        return JSONResponse.make(await controller.report(active: body.active))
    }

}
