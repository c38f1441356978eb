import Foundation
import VMSessionClient
import Hummingbird
import NIOCore
import VMSessionCore
import VMSessionDaemon
import VMSessionMetrics
import VMSessionStore

/// Routes that need the admin token: deciding about web origins and seeing every session.
struct AdminController {
    let manager: SessionManager
    let origins: OriginRegistry
    let metrics: DaemonMetrics
    /// The session list's JSON, encoded once per change (``SessionsController/views``).
    var views = EncodedViews()
    /// The hosts, for each session's host URI (nil in tests without them).
    var hosts: HostRegistry? = nil

    func addRoutes(to router: Router<APIRequestContext>) {
        let origins = router.group("/api/v1/origins", context: AdminRequestContext.self)
        origins.get(use: listOrigins)
        origins.post("approve") { request, context in try await decide(.approved, request, context) }
        origins.post("deny") { request, context in try await decide(.denied, request, context) }
        origins.post("forget", use: forget)
        router.group("/api/v1/sessions", context: AdminRequestContext.self).get(use: listSessions)
    }

    struct OriginList: Encodable {
        let origins: [OriginRecord]
    }

    struct OriginRequest: Decodable {
        let origin: String
    }

    struct DecisionRequest: Decodable {
        let origin: String
        /// Approve as privileged: the origin's pages may also change the idle-aware controller.
        var privileged: Bool?
        /// What the origin's guests may reach (`none`, `internet`, `open`); absent: the daemon's default.
        var egress: String?
        /// The labels a host must carry for the origin's sessions to be placed on it; absent: any host.
        var hostLabels: [String: String]?
    }

    @Sendable func listOrigins(_ request: Request, context: AdminRequestContext) async throws -> Response {
        return JSONResponse.make(OriginList(origins: try origins.all()))
    }

    func decide(_ status: WebOrigin.Status, _ request: Request, _ context: AdminRequestContext) async throws -> Response {
        var request = request
        let body = try await RequestBody.decode(DecisionRequest.self, from: &request, allowed: ["origin", "privileged", "egress", "hostLabels"])
        let origin = try Self.origin(body.origin)
        let egress = try body.egress.map { text throws(VMSessionError) in try EgressPolicy.parse(text) }
        if egress != nil, status != .approved {
            throw VMSessionError(.invalidArgument, "Only an approved origin has an egress policy; 'egress' goes with approve.")
        }
        if let labels = body.hostLabels {
            guard status == .approved else {
                throw VMSessionError(.invalidArgument, "Only an approved origin is restricted to hosts; 'hostLabels' goes with approve.")
            }
            try HostDefinition.validate(labels: labels)
        }
        if body.privileged == true, status != .approved {
            throw VMSessionError(.invalidArgument, "Only an approved origin can be privileged; 'privileged' goes with approve.")
        }
        let decided = try origins.decide(origin, status, privileged: body.privileged ?? false, egress: egress, hostLabels: body.hostLabels ?? [:])
        metrics.originDecided(status == .approved ? .approved : .denied)
        return JSONResponse.make(decided)
    }

    @Sendable func forget(_ request: Request, context: AdminRequestContext) async throws -> Response {
        var request = request
        let origin = try await Self.origin(from: &request)
        guard try origins.forget(origin) else { throw VMSessionError(.notFound, "\(origin) is not known.") }
        metrics.originDecided(.forgotten)
        return Response(status: .noContent)
    }

    static func origin(from request: inout Request) async throws -> WebOrigin {
        let body = try await RequestBody.decode(OriginRequest.self, from: &request, allowed: ["origin"])
        return try origin(body.origin)
    }

    static func origin(_ text: String) throws(VMSessionError) -> WebOrigin {
        guard let origin = WebOrigin(text) else {
            throw VMSessionError(.invalidArgument, "'origin' must be scheme://host[:port] as a browser sends it (e.g. http://localhost:8080); got '\(text)'.")
        }
        return origin
    }

    struct SessionList: Encodable {
        let sessions: [SessionView]
    }

    @Sendable func listSessions(_ request: Request, context: AdminRequestContext) async throws -> Response {
        JSONResponse.make(body: encodedList())
    }

    /// Every session's view, encoded once per generation of the read model (here and on ``ReadFastPath``).
    func encodedList() -> ByteBuffer {
        let generation = manager.readModel.generation
        return views.list(generation: generation) {
            // Read at or after `generation`: a list cached under it is never older than what it says.
            let sessions = manager.readModel.allSessions().sessions
            // The host's name and URI (which do not change while it holds sessions); its link is in each session's own view.
            let uris = Dictionary((hosts?.all() ?? []).map { ($0.definition.name, $0.definition.uri) }, uniquingKeysWith: { a, _ in a })
            let views = sessions.map { SessionView($0, address: manager.address, host: SessionHost(name: $0.host, uri: uris[$0.host])) }
            return (SessionList(sessions: views), Set(sessions.map(\.id)))
        }
    }
}
