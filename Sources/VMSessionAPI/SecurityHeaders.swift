import HTTPTypes
import Hummingbird

/// Puts `X-Content-Type-Options: nosniff` on every response of the daemon (JSON errors, event streams,
/// proxied guest answers, the page): the outermost middleware of both routers, so that no route can forget
/// it. Why: the daemon's origin serves content of many kinds, some of it chosen by guests; a browser must
/// take each as the type it was given, never guess a script or a page out of JSON or text.
struct SecurityHeaders<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        Self.apply(to: &response.headers)
        return response
    }

    /// The headers themselves; the read fast path (``ReadFastPath``) puts them on its answers through this too.
    static func apply(to headers: inout HTTPFields) {
        headers[.xContentTypeOptions] = "nosniff"
    }
}
