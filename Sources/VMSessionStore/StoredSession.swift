import VMSessionCore

/// A session together with what only the daemon sees: its secret's digest and the action under way.
public struct StoredSession: Equatable, Sendable {
    public var session: Session
    public var secret: SecretDigest
    /// Written before the hypervisor is touched, cleared when the action ends, so that start-up can tell
    /// which sessions were interrupted.
    public var pendingAction: SessionAction?
    /// Who created it: the page's web origin, or `local`. Quotas are counted by it.
    public var client: String

    public init(session: Session, secret: SecretDigest, pendingAction: SessionAction? = nil, client: String = "local") {
        self.session = session
        self.secret = secret
        self.pendingAction = pendingAction
        self.client = client
    }
}
