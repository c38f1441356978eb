import Hummingbird
import VMSessionCore

/// Who may change daemon-wide settings (`PUT /api/v1/daemon`, `POST /api/v1/daemon/activity`).
///
/// There is no admin token yet (another change adds one), so for now the rule is: only requests with NO
/// `Origin` header, i.e. local programs such as curl or a desktop helper, never a web page (browsers
/// always send `Origin` on cross-origin and on non-GET requests). The rule is a closure so that the admin
/// token can be wired in without touching the routes.
public struct AdminAccess: Sendable {
    public let isAllowed: @Sendable (Request) -> Bool
    public let refusal: String

    public init(refusal: String, isAllowed: @escaping @Sendable (Request) -> Bool) {
        self.isAllowed = isAllowed
        self.refusal = refusal
    }

    /// The interim rule: local programs only (no `Origin` header).
    public static let localProgramsOnly = AdminAccess(
        refusal: "Only local programs may change daemon settings: requests from web pages (with an Origin header) are refused."
    ) { request in request.headers[.origin] == nil }

    func check(_ request: Request) throws(VMSessionError) {
        guard isAllowed(request) else { throw VMSessionError(.notAllowed, refusal) }
    }
}
