/// What a user (or the idle controller) can ask of a session.
public enum SessionAction: String, Codable, Sendable, CaseIterable {
    case open, start, pause, resume, stop, hibernate, reset, close
    /// A session's snapshots (memory and disk): taken, reverted to, deleted. They have routes of their own
    /// (`…/snapshots`), carry a name, and are run for ``SnapshotName``'s owner through the same operations.
    case snapshot, revert, deleteSnapshot

    /// Whether the action runs as a background operation (202 + operation) rather than inline.
    public var isLong: Bool {
        switch self {
        case .open, .start, .stop, .hibernate, .close, .snapshot, .revert: true
        case .pause, .resume, .reset, .deleteSnapshot: false
        }
    }

    /// Whether the action is about a snapshot (it is asked for under `…/snapshots`, not as `…/{action}`).
    public var isSnapshotAction: Bool {
        switch self {
        case .snapshot, .revert, .deleteSnapshot: true
        default: false
        }
    }
}
