import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import VMSessionClient
import VMSessionCore
import VMSessionDaemon
import VMSessionHypervisor

/// The session routes: a thin harness that decodes, validates, calls the ``SessionManager``, encodes.
struct SessionsController {
    let manager: SessionManager
    let hypervisor: HypervisorDescription
    /// How the daemon runs and caps VMs; nil where the router is built without a daemon (some tests).
    var mode: DaemonMode? = nil
    /// The idle controller's source and why it was chosen, shown in `GET /api/v1`.
    var idleSource: @Sendable () -> DaemonStatus.IdleSourceStatus? = { nil }
    /// The read routes' JSON, encoded once per change (shared with the admin's session list).
    var views = EncodedViews()
    /// Opens and starts sessions whose `version` names a template (nil: every version is an image).
    var templates: TemplateService? = nil
    /// The libvirt hosts, for the host a session's view names (nil in tests without them).
    var hosts: HostRegistry? = nil

    func addRoutes(to router: Router<APIRequestContext>) {
        router.get("/api/v1", use: daemonInfo)
        router.post("/api/v1/sessions", use: requestSession)
        // Everything under a session's path needs a token that may act on it (``SessionRequestContext``).
        let session = router.group("/api/v1/sessions/:id", context: SessionRequestContext.self)
        session.get(use: show)
        session.delete(use: delete)
        for action in SessionAction.allCases where !action.isSnapshotAction {
            session.post("\(action.rawValue)") { request, context in
                try await perform(action, request: request, context: context)
            }
        }
        session.put("execution-cap", use: setExecutionCap)
        session.get("properties", use: listProperties)
        session.get("properties/:name", use: getProperty)
        session.put("properties/:name", use: setProperty)
        session.delete("token", use: revokeToken)
        session.patch("daemon", use: setDaemonControl)
        router.get("/api/v1/operations/:operation", use: showOperation)
        router.get("/api/v1/operations/:operation/wait", use: waitForOperation)
        router.delete("/api/v1/operations/:operation", use: cancelOperation)
    }

    struct DaemonInfo: Encodable {
        let name = "vmsessiond"
        let version: String
        let hypervisor: HypervisorDescription
        let imageVersions: [String]
        /// How the daemon runs: user or system mode, the libvirt kind, the cap mechanism.
        let runtime: DaemonMode?
        let idleSource: DaemonStatus.IdleSourceStatus?
    }

    @Sendable func daemonInfo(_ request: Request, context: APIRequestContext) async throws -> Response {
        // The image store keeps the list it read last until an image is added or removed: no hop while it holds.
        let versions: [String]
        if let known = manager.images.knownVersions { versions = known } else { versions = await manager.images.versions() }
        return JSONResponse.make(body: encodedDaemonInfo(imageVersions: versions))
    }

    /// `GET /api/v1`'s body while the image store knows its versions without a read; nil when it does not.
    func encodedDaemonInfo() -> ByteBuffer? {
        manager.images.knownVersions.map { encodedDaemonInfo(imageVersions: $0) }
    }

    private func encodedDaemonInfo(imageVersions versions: [String]) -> ByteBuffer {
        let key = EncodedViews.DaemonInfoKey(imageVersions: versions, idleSource: idleSource())
        return views.daemonInfo(key) {
            DaemonInfo(
                version: VMSessionAPI.version, hypervisor: hypervisor, imageVersions: key.imageVersions, runtime: mode,
                idleSource: key.idleSource)
        }
    }

    struct SessionRequest: Decodable {
        let name: String
        let secret: String
    }

    @Sendable func requestSession(_ request: Request, context: APIRequestContext) async throws -> Response {
        var request = request
        let body = try await RequestBody.decode(SessionRequest.self, from: &request, allowed: ["name", "secret"])
        // A token from an earlier login proves the owner (it passes the guessing lock); the client names
        // whose guesses are counted and whose quota is used.
        let grant = try await manager.requestSession(
            name: body.name, secret: body.secret, client: Self.client(of: request), token: Self.token(in: request))
        var headers = HTTPFields()
        headers[.location] = "/api/v1/sessions/\(grant.session.id)"
        return JSONResponse.make(
            SessionGrantView(session: SessionView(grant.session, address: manager.address), token: grant.token, created: grant.created),
            status: grant.created ? .created : .ok, headers: headers)
    }

    /// The session from the manager's ``SessionReadModel`` (the token was checked there too, as the
    /// ``SessionRequestContext`` was made): its JSON encoded once per change. Only while the VM has a process
    /// does the view carry live figures (CPU time, the applied cap) read from libvirt, and is encoded for the request.
    @Sendable func show(_ request: Request, context: SessionRequestContext) async throws -> Response {
        let id = context.session
        let (body, host) = try encodedView(of: context.caller)
        if let body { return JSONResponse.make(body: body) }
        let snapshot = try await manager.snapshot(of: id, token: context.caller.token)
        return JSONResponse.make(
            SessionView(
                snapshot.session, address: manager.address, cpuTime: snapshot.cpuTime, apiAvailable: snapshot.apiAvailable,
                appliedCap: snapshot.appliedCap, host: host))
    }

    /// The caller's session's view as encoded once per change, or nil (with its host) while the VM has a process
    /// on a connected host, when the view needs live figures. Here and on the read fast path (``ReadFastPath``).
    func encodedView(of caller: SessionCaller) throws(VMSessionError) -> (body: ByteBuffer?, host: SessionHost) {
        let (session, apiAvailable) = try manager.readModel.view(of: caller.session)
        let host = HostsController.sessionHost(session.host, registry: hosts, admin: caller.role == .admin)
        if !session.state.hasRunningMachine || !(host.state == nil || host.state == "connected") {
            return (views.session(session, apiAvailable: apiAvailable, address: manager.address, host: host), host)
        }
        return (nil, host)
    }

    struct OpenRequest: Decodable {
        var cpus: Int?
        var memory: Int?
        var disk: Int?
        var version: String?
    }

    struct StartRequest: Decodable {
        var userData: String?
        var parameters: [String: String]?
    }

    func perform(_ action: SessionAction, request: Request, context: SessionRequestContext) async throws -> Response {
        var request = request
        let id = context.session
        let input: SessionManager.ActionInput
        // A session whose version names a template is opened and started by its owner (warm, from its memory).
        var fromTemplate: SessionManager.ActionReceipt?
        switch action {
        case .open:
            let body = try await RequestBody.decode(
                OpenRequest.self, from: &request, allowed: ["cpus", "memory", "disk", "version"], emptyMeans: "{}")
            let defaults = Requirements.defaults
            let requirements = Requirements(
                cpus: body.cpus ?? defaults.cpus, memory: body.memory ?? defaults.memory, disk: body.disk ?? defaults.disk,
                version: body.version ?? defaults.version)
            input = .open(requirements)
            fromTemplate = try await templates?.open(id, asking: requirements)
        case .start:
            let body = try await RequestBody.decode(
                StartRequest.self, from: &request, allowed: ["userData", "parameters"], emptyMeans: "{}")
            input = .start(userData: body.userData, parameters: body.parameters ?? [:])
            fromTemplate = try await templates?.start(id, userData: body.userData, parameters: body.parameters ?? [:])
        default:
            _ = try await RequestBody.decode(EmptyRequest.self, from: &request, allowed: [], emptyMeans: "{}")
            input = .none
        }
        let receipt: SessionManager.ActionReceipt
        if let fromTemplate {
            receipt = fromTemplate
        } else {
            receipt = try await manager.perform(action, on: id, input: input)
        }
        let view = ActionView(operation: receipt.operation, session: SessionView(receipt.session, address: manager.address))
        guard action.isLong else { return JSONResponse.make(view) }
        var headers = HTTPFields()
        headers[.location] = "/api/v1/operations/\(receipt.operation.id)"
        return JSONResponse.make(view, status: .accepted, headers: headers)
    }

    struct EmptyRequest: Decodable {}

    struct CapRequest: Decodable {
        let cap: Int
    }

    @Sendable func setExecutionCap(_ request: Request, context: SessionRequestContext) async throws -> Response {
        var request = request
        let id = context.session
        let body = try await RequestBody.decode(CapRequest.self, from: &request, allowed: ["cap"])
        let cap = try ExecutionCap(percent: body.cap)
        let session = try await manager.setExecutionCap(cap, on: id)
        return JSONResponse.make(SessionView(session, address: manager.address))
    }

    struct DaemonControlRequest: Decodable {
        var controlled: Bool?
        var minCap: Int?
        var maxCap: Int?
        var flags: Int?
    }

    /// `PATCH …/daemon`: the session's controller settings; absent fields keep their value.
    @Sendable func setDaemonControl(_ request: Request, context: SessionRequestContext) async throws -> Response {
        var request = request
        let id = context.session
        let body = try await RequestBody.decode(
            DaemonControlRequest.self, from: &request, allowed: ["controlled", "minCap", "maxCap", "flags"])
        let session = try await manager.updateDaemonControl(
            on: id, controlled: body.controlled, minCap: body.minCap, maxCap: body.maxCap, flags: body.flags)
        return JSONResponse.make(SessionView(session, address: manager.address))
    }

    // MARK: Properties

    struct PropertyView: Codable {
        let name: String
        let value: String
    }

    struct PropertyRequest: Decodable {
        let value: String
    }

    @Sendable func listProperties(_ request: Request, context: SessionRequestContext) async throws -> Response {
        let id = context.session
        return JSONResponse.make(["properties": try await manager.properties(of: id)])
    }

    @Sendable func getProperty(_ request: Request, context: SessionRequestContext) async throws -> Response {
        let id = context.session
        let name = context.parameters.get("name") ?? ""
        guard let value = try await manager.properties(of: id)[name] else {
            throw VMSessionError(.notFound, "The session has no property '\(name)'.")
        }
        return JSONResponse.make(PropertyView(name: name, value: value))
    }

    @Sendable func setProperty(_ request: Request, context: SessionRequestContext) async throws -> Response {
        var request = request
        let id = context.session
        let name = context.parameters.get("name") ?? ""
        let body = try await RequestBody.decode(PropertyRequest.self, from: &request, allowed: ["value"])
        try await manager.setProperty(name, to: body.value, of: id)
        return JSONResponse.make(PropertyView(name: name, value: body.value))
    }

    /// Revokes the token presented (or, with the admin token, every token of the session).
    @Sendable func delete(_ request: Request, context: SessionRequestContext) async throws -> Response {
        try await manager.deleteSession(context.session, token: context.caller.token)
        return Response(status: .noContent)
    }

    @Sendable func revokeToken(_ request: Request, context: SessionRequestContext) async throws -> Response {
        _ = try await manager.revokeTokens(of: context.session, token: context.caller.token)
        return Response(status: .noContent)
    }

    // MARK: Operations

    @Sendable func showOperation(_ request: Request, context: APIRequestContext) async throws -> Response {
        JSONResponse.make(try await authorizedOperation(request, context))
    }

    /// Waits for the operation to end, up to `?timeout=` seconds (default 30, at most 300).
    @Sendable func waitForOperation(_ request: Request, context: APIRequestContext) async throws -> Response {
        let operation = try await authorizedOperation(request, context)
        var seconds = 30.0
        if let text = request.uri.queryParameters.get("timeout") {
            guard let value = Double(String(text)), value >= 0, value <= 300 else {
                throw VMSessionError(.invalidArgument, "'timeout' must be 0 to 300 seconds; got '\(text)'.")
            }
            seconds = value
        }
        return JSONResponse.make(try await manager.waitForOperation(operation.id, timeout: .milliseconds(Int(seconds * 1000))))
    }

    /// Operations are single hypervisor steps that cannot be stopped half-way without leaving the VM in an
    /// unknown state, so none can be cancelled; the answer says so rather than pretending.
    @Sendable func cancelOperation(_ request: Request, context: APIRequestContext) async throws -> Response {
        let operation = try await authorizedOperation(request, context)
        guard operation.status == .running else {
            throw VMSessionError(.invalidState, "The operation has already \(operation.status.rawValue).")
        }
        throw VMSessionError(.notSupported, "'\(operation.action.rawValue)' cannot be cancelled once started; wait for it to end.")
    }

    func authorizedOperation(_ request: Request, _ context: APIRequestContext) async throws -> SessionOperation {
        let credentials = try context.presented()
        if let known = try knownOperation(context.parameters.get("operation"), credentials: credentials) { return known }
        // Older operations are read from the store.
        let operation = try await manager.operation(try Self.operationID(context.parameters.get("operation")))
        try credentials.authorize(for: operation.sessionID)
        return operation
    }

    /// The operation named `text` if it runs or ended recently (the read model holds it), checked against the
    /// credentials; nil if only the store can tell. Here and on the read fast path (``ReadFastPath``).
    func knownOperation(_ text: String?, credentials: Credentials) throws(VMSessionError) -> SessionOperation? {
        guard let operation = manager.readModel.operation(try Self.operationID(text)) else { return nil }
        // An operation's path names no session, so its session's check follows the lookup (404 before 401 here).
        try credentials.authorize(for: operation.sessionID)
        return operation
    }

    static func operationID(_ text: String?) throws(VMSessionError) -> OperationID {
        guard let text, let id = OperationID(text) else {
            throw VMSessionError(.notFound, "There is no such operation; operation ids are UUIDs.")
        }
        return id
    }

    /// Who asks: the page's web origin (the origin guard let only approved ones this far), or `local` for
    /// programs without one and for the daemon's own page.
    static func client(of request: Request) -> String {
        guard let header = request.headers[.origin], !CORS.isSameOrigin(header, authority: request.head.authority),
            let origin = WebOrigin(header)
        else { return "local" }
        return origin.value
    }

    /// The bearer token from the Authorization header, or from `?token=` (EventSource cannot set headers).
    static func token(in request: Request) -> String? {
        if let header = request.headers[.authorization], let token = bearer(header) { return token }
        return request.uri.queryParameters.get("token")
    }

    /// The token of an `Authorization: Bearer …` value (the scheme in any case, blanks around the token
    /// dropped); nil for another scheme. On every request's path: bytes compared, no lowercased copy.
    static func bearer(_ header: String) -> String? {
        let bytes = header.utf8
        let scheme = "bearer ".utf8
        guard bytes.count >= scheme.count, zip(bytes, scheme).allSatisfy({ $0 | 0x20 == $1 }) else { return nil }
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        let rest = bytes.dropFirst(scheme.count).drop(while: isBlank)
        guard let last = rest.lastIndex(where: { !isBlank($0) }) else { return "" }
        return String(Substring(rest[...last]))
    }
}
