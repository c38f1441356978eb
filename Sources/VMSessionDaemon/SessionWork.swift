import VMSessionCore

/// Hypervisor work that another owner (the ``SnapshotService``) runs as an operation of the
/// ``SessionManager``: the manager takes the session's one-action-at-a-time lock, records the operation and
/// its progress, announces its start and end, and settles the session's state by the transition table,
/// exactly as for its own actions; the work itself and its own records stay with its owner.
public struct SessionWork: Sendable {
    /// Reports progress: `done` of ``steps``, and what is being done.
    public typealias Progress = @Sendable (_ done: Int, _ message: String) async -> Void

    /// The state the session reaches on success, where the table cannot know it (a revert; see
    /// ``SessionTransition/reaching(_:)``).
    public var reaching: SessionState?
    public var steps: Int
    /// For an `open` run by another owner (a session from a template): the requirements the session is opened
    /// with, validated, counted against the quota and recorded by the manager as for its own `open`.
    public var requirements: Requirements?
    /// For a `start` run by another owner: the guest's network, recorded by the manager with the session (its
    /// guest API is probed and proxied as for its own start).
    public var egress: EgressPolicy?
    /// For an `open` run by another owner: the one host the session can be placed on (a session from a template:
    /// the host the template's files are on), and what is there (for the message when that host cannot take it).
    public var requiredHost: (host: String, why: String)?
    public var run: @Sendable (_ progress: Progress) async throws(VMSessionError) -> Void

    public init(
        reaching: SessionState? = nil, steps: Int, requirements: Requirements? = nil, egress: EgressPolicy? = nil,
        requiredHost: (host: String, why: String)? = nil,
        run: @escaping @Sendable (_ progress: Progress) async throws(VMSessionError) -> Void
    ) {
        self.requiredHost = requiredHost
        self.reaching = reaching
        self.steps = steps
        self.requirements = requirements
        self.egress = egress
        self.run = run
    }
}
