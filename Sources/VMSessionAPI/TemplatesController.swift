import Foundation
import HTTPTypes
import Hummingbird
import VMSessionCore
import VMSessionDaemon

/// The templates over HTTP, for the admin token: make one from a running session or from an image and a
/// warm-up user-data, follow a warm-up, list them, delete one. Pages never make templates; they open sessions
/// with a `version` that names one. A thin harness over the ``TemplateService`` and ``TemplateWarmUp``.
struct TemplatesController {
    let manager: SessionManager
    let service: TemplateService
    let warmUps: TemplateWarmUp

    func addRoutes(to router: Router<APIRequestContext>) {
        let templates = router.group("/api/v1/templates", context: AdminRequestContext.self)
        templates.get(use: list)
        templates.post(use: create)
        templates.get(":template", use: show)
        templates.get(":template/warm-up", use: warmUp)
        templates.delete(":template", use: delete)
    }

    /// The templates, and the warm-ups from images since the daemon started: one under way has no template yet,
    /// and one that failed leaves none, so the list alone could not show either.
    struct TemplateList: Encodable {
        let templates: [VMTemplate]
        let warmUps: [TemplateWarmUpStatus]
    }

    /// From a running session (`fromSession`), or from an image with a warm-up (`fromImage`, `userData`, …).
    struct CreateRequest: Decodable {
        let name: String
        let fromSession: String?
        let fromImage: String?
        let userData: String?
        let parameters: [String: String]?
        let cpus: Int?
        let memory: Int?
        let disk: Int?
        let readyTimeout: Int?
    }

    static let fromImageFields: Set<String> = ["fromImage", "userData", "parameters", "cpus", "memory", "disk", "readyTimeout"]

    @Sendable func list(_ request: Request, context: AdminRequestContext) async throws -> Response {
        JSONResponse.make(TemplateList(templates: try await service.list(), warmUps: await warmUps.all()))
    }

    @Sendable func show(_ request: Request, context: AdminRequestContext) async throws -> Response {
        let name = context.parameters.get("template") ?? ""
        guard let template = try await service.template(named: name) else {
            throw VMSessionError(.notFound, "There is no template '\(name)'.")
        }
        return JSONResponse.make(template)
    }

    /// Makes a template from a running session: 202 with the operation (on that session) that makes it. From an
    /// image: 202 with the warm-up (``TemplateWarmUpStatus``), followed at `…/templates/{name}/warm-up`.
    @Sendable func create(_ request: Request, context: AdminRequestContext) async throws -> Response {
        var request = request
        let body = try await RequestBody.decode(
            CreateRequest.self, from: &request, allowed: Self.fromImageFields.union(["name", "fromSession"]))
        try VMTemplate.validate(name: body.name)
        if let image = body.fromImage {
            return try await createFromImage(body, image: image)
        }
        guard let fromSession = body.fromSession else {
            throw VMSessionError(.invalidArgument, "Say what the template is made from: 'fromSession' (a running session's id) or 'fromImage' with 'userData'.")
        }
        if let extra = Self.fromImageFields.first(where: { field in Self.isSet(field, in: body) }) {
            throw VMSessionError(.invalidArgument, "'\(extra)' goes with 'fromImage'; a template from a session takes only 'name' and 'fromSession'.")
        }
        guard let id = SessionID(fromSession) else {
            throw VMSessionError(.invalidArgument, "'fromSession' must be a session id (a UUID); got '\(fromSession.prefix(80))'.")
        }
        let receipt = try await service.create(body.name, from: id)
        var headers = HTTPFields()
        headers[.location] = "/api/v1/operations/\(receipt.operation.id)"
        let view = ActionView(operation: receipt.operation, session: SessionView(receipt.session, address: manager.address))
        return JSONResponse.make(view, status: .accepted, headers: headers)
    }

    private func createFromImage(_ body: CreateRequest, image: String) async throws -> Response {
        guard body.fromSession == nil else {
            throw VMSessionError(.invalidArgument, "Give 'fromSession' or 'fromImage', not both.")
        }
        guard let userData = body.userData else {
            throw VMSessionError(
                .invalidArgument,
                "'userData' is needed with 'fromImage': the warm-up runs it, and it must print the line \(ReadyMarkerScanner.marker) "
                    + "on the serial console when the guest is ready.")
        }
        let defaults = Requirements.defaults
        let warmUp = TemplateWarmUpRequest(
            name: body.name,
            requirements: Requirements(
                cpus: body.cpus ?? defaults.cpus, memory: body.memory ?? defaults.memory, disk: body.disk ?? defaults.disk, version: image),
            userData: userData, parameters: body.parameters ?? [:],
            readyTimeout: body.readyTimeout.map { .seconds($0) } ?? TemplateWarmUpRequest.defaultReadyTimeout)
        let status = try await warmUps.begin(warmUp)
        var headers = HTTPFields()
        headers[.location] = "/api/v1/templates/\(body.name)/warm-up"
        return JSONResponse.make(status, status: .accepted, headers: headers)
    }

    private static func isSet(_ field: String, in body: CreateRequest) -> Bool {
        switch field {
        case "fromImage": body.fromImage != nil
        case "userData": body.userData != nil
        case "parameters": body.parameters != nil
        case "cpus": body.cpus != nil
        case "memory": body.memory != nil
        case "disk": body.disk != nil
        case "readyTimeout": body.readyTimeout != nil
        default: false
        }
    }

    /// Template `name`'s last warm-up from an image: running (its progress) or how it ended; 404 if there was none
    /// since the daemon started.
    @Sendable func warmUp(_ request: Request, context: AdminRequestContext) async throws -> Response {
        let name = context.parameters.get("template") ?? ""
        try VMTemplate.validate(name: name)
        guard let status = await warmUps.status(of: name) else {
            throw VMSessionError(.notFound, "No template '\(name)' was warmed up from an image since the daemon started.")
        }
        return JSONResponse.make(status)
    }

    @Sendable func delete(_ request: Request, context: AdminRequestContext) async throws -> Response {
        try await service.delete(context.parameters.get("template") ?? "")
        return Response(status: .noContent)
    }
}
