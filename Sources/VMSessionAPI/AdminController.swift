import Foundation
import Hummingbird
import VMSessionCore
import VMSessionDaemon
import VMSessionStore

/// Routes that need the admin token: deciding about web origins and seeing every session.
struct AdminController {
    let manager: SessionManager
    let origins: OriginRegistry

    func addRoutes(to router: Router<APIRequestContext>) {
        router.get("/api/v1/origins", use: listOrigins)
        router.post("/api/v1/origins/approve") { request, context in try await decide(.approved, request, context) }
        router.post("/api/v1/origins/deny") { request, context in try await decide(.denied, request, context) }
        router.post("/api/v1/origins/forget", use: forget)
        router.get("/api/v1/sessions", use: listSessions)
    }

    struct OriginList: Encodable {
        let origins: [OriginRecord]
    }

    struct OriginRequest: Decodable {
        let origin: String
    }

    @Sendable func listOrigins(_ request: Request, context: APIRequestContext) async throws -> Response {
        try await manager.authorizeAdmin(token: SessionsController.token(in: request))
        return JSONResponse.make(OriginList(origins: try origins.all()))
    }

    func decide(_ status: WebOrigin.Status, _ request: Request, _ context: APIRequestContext) async throws -> Response {
        var request = request
        try await manager.authorizeAdmin(token: SessionsController.token(in: request))
        let origin = try await Self.origin(from: &request)
        return JSONResponse.make(try origins.decide(origin, status))
    }

    @Sendable func forget(_ request: Request, context: APIRequestContext) async throws -> Response {
        var request = request
        try await manager.authorizeAdmin(token: SessionsController.token(in: request))
        let origin = try await Self.origin(from: &request)
        guard try origins.forget(origin) else { throw VMSessionError(.notFound, "\(origin) is not known.") }
        return Response(status: .noContent)
    }

    static func origin(from request: inout Request) async throws -> WebOrigin {
        let body = try await RequestBody.decode(OriginRequest.self, from: &request, allowed: ["origin"])
        guard let origin = WebOrigin(body.origin) else {
            throw VMSessionError(.invalidArgument, "'origin' must be scheme://host[:port] as a browser sends it (e.g. http://localhost:8080); got '\(body.origin)'.")
        }
        return origin
    }

    struct SessionList: Encodable {
        let sessions: [SessionView]
    }

    @Sendable func listSessions(_ request: Request, context: APIRequestContext) async throws -> Response {
        try await manager.authorizeAdmin(token: SessionsController.token(in: request))
        return JSONResponse.make(SessionList(sessions: await manager.allSessions().map { SessionView($0, address: manager.address) }))
    }
}
