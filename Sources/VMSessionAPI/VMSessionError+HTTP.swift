import HTTPTypes
import Hummingbird
import NIOCore
import VMSessionCore

extension VMSessionError.Code {
    /// The one place where error codes become HTTP statuses.
    var httpStatus: HTTPResponse.Status {
        switch self {
        case .invalidArgument, .invalidUsage, .notValidated: .badRequest
        case .unauthorized: .unauthorized
        case .passwordDenied, .notAllowed, .notTrusted, .forbiddenHost: .forbidden
        case .notFound: .notFound
        case .methodNotAllowed: .methodNotAllowed
        case .invalidState, .operationInProgress: .conflict
        case .payloadTooLarge: .contentTooLarge
        case .tooManyAttempts, .tooManyStreams, .tooManySessions, .tooManyRequests: .tooManyRequests
        case .insufficientResources: .init(code: 507, reasonPhrase: "Insufficient Storage")
        case .originNotApproved: .forbidden
        case .notSupported: .unprocessableContent
        case .notImplemented: .notImplemented
        case .unavailable, .portInUse, .hostUnreachable: .serviceUnavailable
        // The image server sent something wrong or nothing: the fault is upstream of the daemon.
        case .checksumMismatch, .downloadFailed, .guestAPIFailed: .badGateway
        case .guestAPITimeout, .guestNotReady: .gatewayTimeout
        default: .internalServerError
        }
    }
}

extension VMSessionError {
    /// The JSON error response: `{"error": {"code", "legacyCode", "message", "retryAfter"?}}`.
    func response() -> Response {
        let body = ErrorBody(
            error: .init(code: code.rawValue, legacyCode: code.legacyCode, message: message, retryAfter: retryAfterSeconds))
        var headers = HTTPFields()
        if let retryAfterSeconds { headers[.retryAfter] = "\(retryAfterSeconds)" }
        return JSONResponse.make(body, status: code.httpStatus, headers: headers)
    }

    struct ErrorBody: Encodable {
        struct Detail: Encodable {
            let code: String
            let legacyCode: Int
            let message: String
            /// Seconds to wait before trying again, for errors that clear with time.
            let retryAfter: Int?
        }
        let error: Detail
    }
}
