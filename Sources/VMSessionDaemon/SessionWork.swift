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
    public var run: @Sendable (_ progress: Progress) async throws(VMSessionError) -> Void

    public init(reaching: SessionState? = nil, steps: Int, run: @escaping @Sendable (_ progress: Progress) async throws(VMSessionError) -> Void) {
        self.reaching = reaching
        self.steps = steps
        self.run = run
    }
}
