import HTTPTypes
import Hummingbird
import Synchronization
import VMSessionCore

/// Answers a request whose path exists but not for its method (`TRACE /api/v1`, `DELETE /api/v1/sessions`)
/// with 405 `method_not_allowed` and an `Allow` header, as HTTP asks, instead of the router's 404 (which
/// would claim the resource does not exist). It knows the routes only once they are all added, so it is
/// given them after the router is built (see ``VMSessionAPI/buildRouter``).
struct MethodGuard<Context: RequestContext>: RouterMiddleware {
    /// The routes by path pattern, set once after the router is complete.
    final class Table: Sendable {
        private let patterns = Mutex<[(path: RouterPath, methods: Set<HTTPRequest.Method>)]>([])

        func set(_ routes: [(path: RouterPath, method: HTTPRequest.Method)]) {
            var byPath: [String: (path: RouterPath, methods: Set<HTTPRequest.Method>)] = [:]
            for route in routes {
                byPath[route.path.description, default: (route.path, [])].methods.insert(route.method)
            }
            let table = Array(byPath.values)
            patterns.withLock { $0 = table }
        }

        /// The methods served at `path` by the route the router picks for it (the one with the most literal
        /// segments, as the router prefers `/images/pull` to `/images/:version`), or nil if none has that path.
        func methods(at path: String) -> Set<HTTPRequest.Method>? {
            let segments = path.split(separator: "/")
            return patterns.withLock { patterns in
                patterns.filter { Self.matches($0.path.components, segments) }
                    .max { Self.literals($0.path.components) < Self.literals($1.path.components) }?.methods
            }
        }

        private static func literals(_ pattern: [RouterPath.Element]) -> Int {
            pattern.count { RouterPath.Element.path(Substring($0.description)) == $0 }
        }

        private static func matches(_ pattern: [RouterPath.Element], _ path: [Substring]) -> Bool {
            if let last = pattern.last, last == .recursiveWildcard {
                return path.count >= pattern.count - 1 && zip(pattern.dropLast(), path).allSatisfy { $0 ~= $1 }
            }
            return pattern.count == path.count && zip(pattern, path).allSatisfy { $0 ~= $1 }
        }
    }

    let table: Table

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            guard let methods = table.methods(at: request.uri.path), !methods.contains(request.method) else { throw error }
            // The documented methods: HEAD (implied by GET) and OPTIONS (CORS preflights of approved pages) are
            // answered too, but are not the resource's methods.
            let allowed = methods.subtracting([.head, .options]).map(\.rawValue).sorted().joined(separator: ", ")
            var response = VMSessionError(
                .methodNotAllowed, "\(request.method) is not allowed on \(request.uri.path); it takes \(allowed).").response()
            response.headers[.allow] = allowed
            return response
        }
    }
}
