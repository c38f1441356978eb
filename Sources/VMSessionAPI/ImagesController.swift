import Foundation
import Hummingbird
import VMSessionCore
import VMSessionDaemon
import VMSessionStore

/// The image catalog over HTTP, for the admin token: list, register a local file, register a remote image
/// and pull it, remove. Pages never add images; they open sessions with a `version` that is listed.
struct ImagesController {
    let manager: SessionManager
    /// Templates made on an image keep their disk as an overlay on its file: such an image is not removed.
    var templates: TemplateService? = nil

    func addRoutes(to router: Router<APIRequestContext>) {
        let images = router.group("/api/v1/images", context: AdminRequestContext.self)
        images.get(use: list)
        images.get(":version", use: show)
        images.post(use: add)
        images.post("pull", use: pull)
        images.delete(":version", use: remove)
    }

    struct ImageList: Encodable {
        let images: [ImageView]
    }

    @Sendable func list(_ request: Request, context: AdminRequestContext) async throws -> Response {
        return JSONResponse.make(ImageList(images: try await manager.images.list().map(ImageView.init)))
    }

    @Sendable func show(_ request: Request, context: AdminRequestContext) async throws -> Response {
        let version = context.parameters.get("version") ?? ""
        guard let entry = try await manager.images.list().first(where: { $0.version == version }) else {
            throw VMSessionError(.notFound, "There is no image for version '\(version)'.")
        }
        return JSONResponse.make(ImageView(entry))
    }

    struct AddRequest: Decodable {
        let version: String
        let path: String
        let format: String?
    }

    @Sendable func add(_ request: Request, context: AdminRequestContext) async throws -> Response {
        var request = request
        let body = try await RequestBody.decode(AddRequest.self, from: &request, allowed: ["version", "path", "format"])
        let format = try Self.format(body.format)
        let record = try await manager.images.register(version: body.version, file: body.path, format: format)
        return JSONResponse.make(ImageView(record: record), status: .created)
    }

    struct PullRequest: Decodable {
        let version: String
        let url: String
        let sha256: String
        let format: String?
    }

    /// Registers a remote image and starts its download in the background (202); `GET /images/{version}`
    /// shows how far it is. An open of the version meanwhile joins the same download.
    @Sendable func pull(_ request: Request, context: AdminRequestContext) async throws -> Response {
        var request = request
        let body = try await RequestBody.decode(PullRequest.self, from: &request, allowed: ["version", "url", "sha256", "format"])
        let format = try Self.format(body.format)
        let record = try await manager.images.registerRemote(
            version: body.version, url: body.url, sha256: body.sha256, format: format, pull: true)
        return JSONResponse.make(ImageView(record: record), status: .accepted)
    }

    @Sendable func remove(_ request: Request, context: AdminRequestContext) async throws -> Response {
        let version = context.parameters.get("version") ?? ""
        if let template = try await templates?.list().first(where: { $0.baseVersion == version }) {
            throw VMSessionError(
                .invalidState, "Image '\(version)' is the base of template '\(template.name)' (its disk is an overlay on it); delete the template first.")
        }
        try await manager.removeImage(version)
        return Response(status: .noContent)
    }

    static func format(_ text: String?) throws(VMSessionError) -> ImageRecord.Format? {
        guard let text else { return nil }
        guard let format = ImageRecord.Format(rawValue: text) else {
            throw VMSessionError(.invalidArgument, "'format' must be 'qcow2' or 'raw'; got '\(text)'.")
        }
        return format
    }
}

/// An image as the API shows it. The built-in appliance has format `kernel` and no file of its own.
struct ImageView: Encodable {
    struct Download: Encodable {
        let bytes: Int64
        let totalBytes: Int64?
        let bytesPerSecond: Double
    }

    let version: String
    let builtIn: Bool
    /// `available`, `remote` (not downloaded yet), `downloading`, or `missing` (the appliance is not built).
    let state: String
    let format: String
    let path: String?
    let sha256: String?
    let url: String?
    let size: Int64?
    let addedAt: Date?
    let download: Download?
    let lastError: String?

    init(_ entry: ImageStore.Entry) {
        if let record = entry.record {
            self.init(record: record, download: entry.download, lastError: entry.lastError)
        } else {
            self.init(builtIn: entry.version, ready: entry.builtInReady == true)
        }
    }

    init(builtIn version: String, ready: Bool) {
        self.version = version
        builtIn = true
        state = ready ? "available" : "missing"
        format = "kernel"
        path = nil
        sha256 = nil
        url = nil
        size = nil
        addedAt = nil
        download = nil
        lastError = nil
    }

    init(record: ImageRecord, download: ImageDownloadProgress? = nil, lastError: String? = nil) {
        version = record.version
        builtIn = false
        state = download != nil ? "downloading" : record.state.rawValue
        format = record.format.rawValue
        path = record.path
        sha256 = record.sha256
        url = record.url
        size = record.size
        addedAt = record.addedAt
        self.download = download.map { Download(bytes: $0.bytes, totalBytes: $0.totalBytes, bytesPerSecond: $0.bytesPerSecond) }
        self.lastError = lastError
    }
}
