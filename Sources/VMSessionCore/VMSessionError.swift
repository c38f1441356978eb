/// The one error type of vmsessiond: a code that callers can branch on (and that the API maps to an HTTP
/// status in one place), a message a user can act on, and the underlying cause for logs.
public struct VMSessionError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, as a stable string (`invalid_state`) and the plugin's legacy number (-8).
    /// New codes can be added without breaking callers that switch on the known ones.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        /// The CernVM Web API plugin's error number (its Appendix A), kept for pages written against it.
        public let legacyCode: Int

        public init(_ rawValue: String, legacyCode: Int) {
            self.rawValue = rawValue
            self.legacyCode = legacyCode
        }

        public var description: String { rawValue }

        public static func == (lhs: Code, rhs: Code) -> Bool { lhs.rawValue == rhs.rawValue }
        public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }

        public static let creationFailed = Code("creation_failed", legacyCode: -1)
        public static let modificationFailed = Code("modification_failed", legacyCode: -2)
        public static let controlFailed = Code("control_failed", legacyCode: -3)
        public static let deletionFailed = Code("deletion_failed", legacyCode: -4)
        public static let queryFailed = Code("query_failed", legacyCode: -5)
        public static let ioError = Code("io_error", legacyCode: -6)
        public static let hypervisorError = Code("hypervisor_error", legacyCode: -7)
        public static let invalidState = Code("invalid_state", legacyCode: -8)
        public static let notFound = Code("not_found", legacyCode: -9)
        public static let notAllowed = Code("not_allowed", legacyCode: -10)
        public static let notSupported = Code("not_supported", legacyCode: -11)
        public static let notValidated = Code("not_validated", legacyCode: -12)
        public static let notTrusted = Code("not_trusted", legacyCode: -13)
        public static let passwordDenied = Code("password_denied", legacyCode: -20)
        public static let invalidUsage = Code("invalid_usage", legacyCode: -99)
        public static let notImplemented = Code("not_implemented", legacyCode: -100)
        // Codes the plugin did not have; they keep the nearest legacy number.
        /// A request body or parameter failed validation.
        public static let invalidArgument = Code("invalid_argument", legacyCode: -99)
        /// Another action is still running on the session.
        public static let operationInProgress = Code("operation_in_progress", legacyCode: -8)
        /// The request carries no valid token for the session.
        public static let unauthorized = Code("unauthorized", legacyCode: -10)
        /// The Host header names something other than the loopback (DNS rebinding guard).
        public static let forbiddenHost = Code("forbidden_host", legacyCode: -13)
        /// The request body is larger than the daemon accepts.
        public static let payloadTooLarge = Code("payload_too_large", legacyCode: -99)
        /// The daemon is shutting down or otherwise cannot serve now.
        public static let unavailable = Code("unavailable", legacyCode: -7)
        /// Too many wrong secrets in a short time; wait ``VMSessionError/retryAfterSeconds``.
        public static let tooManyAttempts = Code("too_many_attempts", legacyCode: -20)
        /// The request comes from a web origin the user has not approved (or has denied).
        public static let originNotApproved = Code("origin_not_approved", legacyCode: -13)
        /// The daemon limits how many event streams one origin may hold open.
        public static let tooManyStreams = Code("too_many_streams", legacyCode: -10)
        /// A downloaded image's SHA-256 is not the one it was registered with; the file was not kept.
        public static let checksumMismatch = Code("checksum_mismatch", legacyCode: -12)
        /// An image could not be fetched (network failure, refusing server) after the retries.
        public static let downloadFailed = Code("download_failed", legacyCode: -6)
        /// A client or the daemon holds as many sessions (or pending origins) as it may; see ``SessionQuota``.
        public static let tooManySessions = Code("too_many_sessions", legacyCode: -1)
        /// Opening would take the open sessions past the cpus, memory or disk the user allows.
        public static let insufficientResources = Code("insufficient_resources", legacyCode: -1)
        /// The path exists, but not for this HTTP method (405, with `Allow`).
        public static let methodNotAllowed = Code("method_not_allowed", legacyCode: -99)
        /// The port chosen for a guest's API was taken by another program before the VM could bind it.
        public static let portInUse = Code("port_in_use", legacyCode: -7)
        /// The guest's API broke the connection or answered with something that is not HTTP (502).
        public static let guestAPIFailed = Code("guest_api_failed", legacyCode: -7)
        /// The guest's API did not answer within the proxy's time limit (504).
        public static let guestAPITimeout = Code("guest_api_timeout", legacyCode: -7)
        /// A template warm-up's guest did not say it was ready (its console's ready line) in time.
        public static let guestNotReady = Code("guest_not_ready", legacyCode: -7)
        /// A session has as many proxied requests to its guest in flight as it may; one must end first.
        public static let tooManyRequests = Code("too_many_requests", legacyCode: -10)
        /// The session's VM is on a libvirt host the daemon cannot reach now (503); the message names the host,
        /// since when and why. Every other host's sessions keep working.
        public static let hostUnreachable = Code("host_unreachable", legacyCode: -7)
        /// A bug: something that should not happen happened.
        public static let internalError = Code("internal_error", legacyCode: -7)
    }

    public let code: Code
    public let message: String
    public let cause: (any Error)?
    /// For errors that clear with time: how long to wait before trying again.
    public let retryAfterSeconds: Int?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil, retryAfterSeconds: Int? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
        self.retryAfterSeconds = retryAfterSeconds
    }

    public var description: String {
        if let cause { return "\(code): \(message) (cause: \(cause))" }
        return "\(code): \(message)"
    }
}
