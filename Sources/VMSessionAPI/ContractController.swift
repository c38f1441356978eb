import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import VMSessionCore
import VMSessionSchema

/// `GET /api/v1/openapi.yaml`: the API's contract, `Schema/openapi.yaml`, as the daemon was built with it.
/// Public documentation, so no token; the Host and Origin guards still apply, as on every route.
struct ContractController {
    func addRoutes(to router: Router<APIRequestContext>) {
        router.get("/api/v1/openapi.yaml", use: document)
    }

    @Sendable func document(_ request: Request, context: APIRequestContext) async throws -> Response {
        let data: Data
        do {
            data = try VMSessionSchema.openAPIDocument()
        } catch {
            throw VMSessionError(.ioError, "The OpenAPI document could not be read from the daemon's resources.", cause: error)
        }
        var headers = HTTPFields()
        headers[.contentType] = "application/yaml"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
