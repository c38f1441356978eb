import Foundation
import HTTPTypes
import Hummingbird
import VMSessionCore
import VMSessionDaemon

/// The snapshot routes of a session (`…/sessions/{id}/snapshots`): a thin harness over the
/// ``SnapshotService``, behind the same token check as every session route (``SessionRequestContext``).
struct SnapshotsController {
    let sessions: SessionsController
    let service: SnapshotService

    func addRoutes(to router: Router<APIRequestContext>) {
        let group = router.group("/api/v1/sessions/:id/snapshots", context: SessionRequestContext.self)
        group.get(use: list)
        group.post(use: create)
        group.post(":snapshot/revert", use: revert)
        group.delete(":snapshot", use: delete)
    }

    struct SnapshotList: Encodable {
        let snapshots: [VMSnapshot]
    }

    struct CreateRequest: Decodable {
        let name: String
    }

    @Sendable func list(_ request: Request, context: SessionRequestContext) async throws -> Response {
        let id = context.session
        return JSONResponse.make(SnapshotList(snapshots: try await service.list(id)))
    }

    @Sendable func create(_ request: Request, context: SessionRequestContext) async throws -> Response {
        var request = request
        let id = context.session
        let body = try await RequestBody.decode(CreateRequest.self, from: &request, allowed: ["name"])
        return accepted(try await service.create(body.name, on: id))
    }

    @Sendable func revert(_ request: Request, context: SessionRequestContext) async throws -> Response {
        var request = request
        let id = context.session
        _ = try await RequestBody.decode(SessionsController.EmptyRequest.self, from: &request, allowed: [], emptyMeans: "{}")
        return accepted(try await service.revert(to: Self.name(in: context), on: id))
    }

    @Sendable func delete(_ request: Request, context: SessionRequestContext) async throws -> Response {
        let id = context.session
        try await service.delete(Self.name(in: context), on: id)
        return Response(status: .noContent)
    }

    private func accepted(_ receipt: SessionManager.ActionReceipt) -> Response {
        var headers = HTTPFields()
        headers[.location] = "/api/v1/operations/\(receipt.operation.id)"
        let view = ActionView(operation: receipt.operation, session: SessionView(receipt.session, address: sessions.manager.address))
        return JSONResponse.make(view, status: .accepted, headers: headers)
    }

    static func name(in context: SessionRequestContext) -> String {
        context.parameters.get("snapshot") ?? ""
    }
}
