import Foundation
import HTTPTypes
import Hummingbird
import VMSessionCore
import VMSessionDaemon

/// The templates over HTTP, for the admin token: make one from a running session, list them, delete one.
/// Pages never make templates; they open sessions with a `version` that names one. A thin harness over the
/// ``TemplateService``.
struct TemplatesController {
    let manager: SessionManager
    let service: TemplateService

    func addRoutes(to router: Router<APIRequestContext>) {
        let templates = router.group("/api/v1/templates", context: AdminRequestContext.self)
        templates.get(use: list)
        templates.post(use: create)
        templates.get(":template", use: show)
        templates.delete(":template", use: delete)
    }

    struct TemplateList: Encodable {
        let templates: [VMTemplate]
    }

    struct CreateRequest: Decodable {
        let name: String
        let fromSession: String
    }

    @Sendable func list(_ request: Request, context: AdminRequestContext) async throws -> Response {
        JSONResponse.make(TemplateList(templates: try await service.list()))
    }

    @Sendable func show(_ request: Request, context: AdminRequestContext) async throws -> Response {
        let name = context.parameters.get("template") ?? ""
        guard let template = try await service.template(named: name) else {
            throw VMSessionError(.notFound, "There is no template '\(name)'.")
        }
        return JSONResponse.make(template)
    }

    /// Makes a template from a running session: 202 with the operation (on that session) that makes it.
    @Sendable func create(_ request: Request, context: AdminRequestContext) async throws -> Response {
        var request = request
        let body = try await RequestBody.decode(CreateRequest.self, from: &request, allowed: ["name", "fromSession"])
        try VMTemplate.validate(name: body.name)
        guard let id = SessionID(body.fromSession) else {
            throw VMSessionError(.invalidArgument, "'fromSession' must be a session id (a UUID); got '\(body.fromSession.prefix(80))'.")
        }
        let receipt = try await service.create(body.name, from: id)
        var headers = HTTPFields()
        headers[.location] = "/api/v1/operations/\(receipt.operation.id)"
        let view = ActionView(operation: receipt.operation, session: SessionView(receipt.session, address: manager.address))
        return JSONResponse.make(view, status: .accepted, headers: headers)
    }

    @Sendable func delete(_ request: Request, context: AdminRequestContext) async throws -> Response {
        try await service.delete(context.parameters.get("template") ?? "")
        return Response(status: .noContent)
    }
}
