import HTTPTypes
import Hummingbird
import VMSessionCore
import VMSessionDaemon
import VMSessionMetrics

/// Lets browsers in only from origins the user approved, and gives exactly those the CORS headers.
///
/// Every web page the user opens can send requests to 127.0.0.1, so the `Origin` header decides:
/// - no `Origin` (curl, vmsessionctl, other local programs) or the daemon's own origin: allowed, no CORS;
/// - a GET of public library code (`/vmsession.js`, noVNC and xterm.js under `/lib/`): allowed from anywhere, nothing recorded, since a page
///   needs the library to find out that it is not approved yet (see ``WebController``);
/// - an approved origin: allowed, with CORS headers (and preflights answered, including Private Network Access);
/// - anything else: refused with `origin_not_approved` and no CORS headers, and an unknown origin is recorded
///   as pending for the user to approve (`vmsessionctl origins approve ORIGIN`).
struct OriginGuard<Context: RequestContext>: RouterMiddleware {
    let origins: OriginRegistry
    let metrics: DaemonMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let verdict = Self.verdict(of: request, origins: origins)
        if let check = verdict.check { metrics.originChecked(check) }
        switch verdict {
        case .noOrigin, .sameOrigin, .publicAsset:
            return try await next(request, context)
        case .invalid(let header):
            return VMSessionError(.originNotApproved, "Requests from the origin '\(header)' are not accepted.").response()
        case .approved(let origin):
            if request.method == .options { return CORS.preflight(request, origin: origin) }
            var response = try await next(request, context)
            CORS.addHeaders(to: &response.headers, origin: origin)
            return response
        case .denied(let origin):
            origins.noteRefused(origin)
            return VMSessionError(.originNotApproved, "The user denied \(origin) the use of vmsessiond.").response()
        case .pending(let origin):
            guard origins.noteRefused(origin) else {
                return VMSessionError(
                    .originNotApproved,
                    "\(origin) is not approved, and \(origins.maximumPending) other origins already wait for the user's decision; "
                        + "it was not recorded. The user can approve it with `vmsessionctl origins approve \(origin)`."
                ).response()
            }
            return VMSessionError(
                .originNotApproved,
                "\(origin) is not approved yet; the user can approve it with `vmsessionctl origins approve \(origin)`."
            ).response()
        }
    }

    /// What the guard decides for a request, before anything is counted or recorded: the one decision that
    /// this guard and the read fast path (``ReadFastPath``) both act on.
    enum Verdict: Equatable {
        /// No `Origin` header: curl, vmsessionctl, other local programs.
        case noOrigin
        /// The daemon's own page.
        case sameOrigin
        /// A GET of public library code, from anywhere.
        case publicAsset
        /// An `Origin` header that is no web origin.
        case invalid(String)
        case approved(WebOrigin)
        case denied(WebOrigin)
        /// Not decided by the user yet, or never seen.
        case pending(WebOrigin)

        /// The origin check the metrics count for it (none without an `Origin` header).
        var check: DaemonMetrics.OriginCheck? {
            switch self {
            case .noOrigin: nil
            case .sameOrigin: .sameOrigin
            case .publicAsset: .publicAsset
            case .invalid: .invalid
            case .approved: .approved
            case .denied: .denied
            case .pending: .pending
            }
        }
    }

    static func verdict(of request: Request, origins: OriginRegistry) -> Verdict {
        guard let header = request.headers[.origin] else { return .noOrigin }
        if CORS.isSameOrigin(header, authority: request.head.authority) { return .sameOrigin }
        if request.method == .get, WebController.publicPaths.contains(request.uri.path) || request.uri.path.hasPrefix(WebController.libraryPrefix) {
            return .publicAsset
        }
        guard let origin = WebOrigin(header) else { return .invalid(header) }
        switch origins.status(of: origin) {
        case .approved: return .approved(origin)
        case .denied: return .denied(origin)
        case .pending, nil: return .pending(origin)
        }
    }
}

/// The CORS headers the daemon gives approved origins.
enum CORS {
    static let requestPrivateNetwork = HTTPField.Name("Access-Control-Request-Private-Network")
    static let allowPrivateNetwork = HTTPField.Name("Access-Control-Allow-Private-Network")
    static let allowedHeaders = "Authorization, Content-Type, Last-Event-ID"
    static let allowedMethods = "GET, POST, PUT, PATCH, DELETE"

    /// A browser marks same-origin requests with the page's own origin: the daemon's page itself.
    static func isSameOrigin(_ origin: String, authority: String?) -> Bool {
        guard let authority else { return false }
        return origin.lowercased() == "http://\(authority.lowercased())"
    }

    /// The answer to a preflight from an approved origin, including Private Network Access.
    static func preflight(_ request: Request, origin: WebOrigin) -> Response {
        var headers = HTTPFields()
        addHeaders(to: &headers, origin: origin)
        headers[.accessControlAllowMethods] = allowedMethods
        headers[.accessControlAllowHeaders] = allowedHeaders
        headers[.accessControlMaxAge] = "600"
        if let asked = requestPrivateNetwork, let allow = allowPrivateNetwork, request.headers[asked]?.lowercased() == "true" {
            headers[allow] = "true"
        }
        return Response(status: .noContent, headers: headers)
    }

    static func addHeaders(to headers: inout HTTPFields, origin: WebOrigin) {
        headers[.accessControlAllowOrigin] = origin.value
        headers[.accessControlExposeHeaders] = "Location, Retry-After"
        headers[.vary] = "Origin"
    }
}
