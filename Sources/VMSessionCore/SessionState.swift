/// Where a session is in its life. The plugin's numeric codes (its Appendix D, plus `saved`) are kept as
/// ``legacyCode``; the transient states after `saved` are vmsessiond's own and get codes past the plugin's.
public enum SessionState: String, Codable, Sendable, CaseIterable {
    /// No VM; `open` creates it.
    case closed
    /// Creating the VM: disks and domain.
    case opening
    /// VM defined and powered off; `start` boots it.
    case open
    /// Booting, or restoring from hibernation.
    case starting
    /// The VM runs.
    case running
    /// The last operation failed, or the VM failed on its own; `close` or a retry leaves it.
    case error
    /// vCPUs stopped, memory kept.
    case paused
    /// Hibernated: memory saved to disk, no process.
    case saved
    /// Powering off.
    case stopping
    /// Hibernating.
    case saving
    /// Powering off and removing the VM and its disks.
    case closing

    /// The plugin's `state` number for pages written against it.
    public var legacyCode: Int {
        switch self {
        case .closed: 0
        case .opening: 1
        case .open: 2
        case .starting: 3
        case .running: 4
        case .error: 5
        case .paused: 6
        case .saved: 7
        case .stopping: 8
        case .saving: 9
        case .closing: 10
        }
    }

    /// Whether the state only exists while an operation runs.
    public var isTransient: Bool {
        switch self {
        case .opening, .starting, .stopping, .saving, .closing: true
        default: false
        }
    }

    /// Whether a VM process exists in this state (so that its execution cap can be applied live).
    public var hasRunningMachine: Bool { self == .running || self == .paused }
}
