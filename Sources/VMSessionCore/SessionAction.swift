/// What a user (or the idle controller) can ask of a session.
public enum SessionAction: String, Codable, Sendable, CaseIterable {
    case open, start, pause, resume, stop, hibernate, reset, close
    /// A session's snapshots (memory and disk): taken, reverted to, deleted. They have routes of their own
    /// (`…/snapshots`), carry a name, and are run for ``SnapshotName``'s owner through the same operations.
    case snapshot, revert, deleteSnapshot
    /// The running session saved as a template (memory and disk) and brought back running; asked for by the
    /// admin under `/api/v1/templates`, run for the template's owner through the same operations.
    case makeTemplate

    /// Whether the action runs as a background operation (202 + operation) rather than inline.
    public var isLong: Bool {
        switch self {
        case .open, .start, .stop, .hibernate, .close, .snapshot, .revert, .makeTemplate: true
        case .pause, .resume, .reset, .deleteSnapshot: false
        }
    }

    /// Whether the action's intent (the session's pending action and its running operation) is stored before
    /// the hypervisor is asked, so that a daemon killed during it finds the action at its next start and
    /// settles it against the VM.
    ///
    /// Pause, resume and reset need no such record: the session shows no state of its own while they run, a
    /// failure leaves it as it was, and their whole effect is the VM's run state, which libvirt keeps and
    /// the next start reads back (a VM paused by a pause whose end was never stored is seen as `paused`).
    /// Their operation and its events are stored with their end, in one transaction: one commit on the
    /// control path instead of two, and none before libvirt is asked.
    public var recordsIntentFirst: Bool {
        switch self {
        case .pause, .resume, .reset: false
        default: true
        }
    }

    /// Whether the action is run for another owner (snapshots, templates): it is asked for under a route of
    /// its own (`…/snapshots`, `/api/v1/templates`), not as `…/{action}`, and always comes with its work.
    public var isSnapshotAction: Bool {
        switch self {
        case .snapshot, .revert, .deleteSnapshot, .makeTemplate: true
        default: false
        }
    }
}
