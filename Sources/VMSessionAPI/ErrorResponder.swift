import Hummingbird
import Logging
import VMSessionCore

/// Turns every error a route throws into the JSON error shape, so that no caller ever sees Hummingbird's
/// plain-text errors or an unexplained 500.
struct ErrorResponder<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as VMSessionError {
            if error.code.httpStatus.code >= 500 {
                context.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            }
            return error.response()
        } catch let error as HTTPError {
            let code: VMSessionError.Code =
                switch error.status {
                case .notFound: .notFound
                case .methodNotAllowed: .invalidUsage
                case .contentTooLarge: .payloadTooLarge
                case .badRequest: .invalidArgument
                default: .internalError
                }
            let message =
                switch error.status {
                case .notFound: "There is no such endpoint: \(request.method) \(request.uri.path)."
                case .methodNotAllowed: "\(request.method) is not allowed on \(request.uri.path)."
                default: error.body ?? "\(error.status)"
                }
            return VMSessionError(code, message).response()
        } catch {
            context.logger.error("unexpected error", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return VMSessionError(.internalError, "An unexpected error occurred; see the daemon's log.").response()
        }
    }
}
