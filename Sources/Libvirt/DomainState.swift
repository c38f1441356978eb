import CLibvirt

/// A domain's state with libvirt's reason, in Swift terms.
public enum DomainState: Equatable, Sendable {
    case running
    case paused(reason: String)
    case shutOff(ShutOffReason)
    case crashed(reason: String)
    /// The guest is powering off; its process still runs.
    case shuttingDown
    /// The guest suspended itself through power management (S3/S4); `resume` does not wake it.
    case suspendedByGuest
    /// libvirt has no state for it.
    case noState

    /// Why a domain is shut off (`virDomainShutoffReason`).
    public enum ShutOffReason: Equatable, Sendable {
        case unknown, shutdown, destroyed, crashed, saved, failed, fromSnapshot, daemon
    }

    init(state: Int32, reason: Int32) {
        let reasonValue = UInt32(bitPattern: reason)
        switch UInt32(bitPattern: state) {
        case VIR_DOMAIN_RUNNING.rawValue, VIR_DOMAIN_BLOCKED.rawValue:
            self = .running
        case VIR_DOMAIN_PAUSED.rawValue:
            self = .paused(reason: Self.pausedReason(reasonValue))
        case VIR_DOMAIN_SHUTOFF.rawValue:
            self = .shutOff(Self.shutOffReason(reasonValue))
        case VIR_DOMAIN_CRASHED.rawValue:
            self = .crashed(reason: reasonValue == VIR_DOMAIN_CRASHED_PANICKED.rawValue ? "guest kernel panic" : "unknown")
        case VIR_DOMAIN_SHUTDOWN.rawValue:
            self = .shuttingDown
        case VIR_DOMAIN_PMSUSPENDED.rawValue:
            self = .suspendedByGuest
        default:
            self = .noState
        }
    }

    public var isActive: Bool {
        switch self {
        case .shutOff, .crashed: false
        default: true
        }
    }

    private static func shutOffReason(_ reason: UInt32) -> ShutOffReason {
        switch reason {
        case VIR_DOMAIN_SHUTOFF_SHUTDOWN.rawValue: .shutdown
        case VIR_DOMAIN_SHUTOFF_DESTROYED.rawValue: .destroyed
        case VIR_DOMAIN_SHUTOFF_CRASHED.rawValue: .crashed
        case VIR_DOMAIN_SHUTOFF_SAVED.rawValue: .saved
        case VIR_DOMAIN_SHUTOFF_FAILED.rawValue: .failed
        case VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT.rawValue: .fromSnapshot
        case VIR_DOMAIN_SHUTOFF_DAEMON.rawValue: .daemon
        default: .unknown
        }
    }

    private static func pausedReason(_ reason: UInt32) -> String {
        switch reason {
        case VIR_DOMAIN_PAUSED_USER.rawValue: "by request"
        case VIR_DOMAIN_PAUSED_IOERROR.rawValue: "disk I/O error"
        case VIR_DOMAIN_PAUSED_SAVE.rawValue: "saving"
        case VIR_DOMAIN_PAUSED_STARTING_UP.rawValue: "starting up"
        case VIR_DOMAIN_PAUSED_SHUTTING_DOWN.rawValue: "shutting down"
        case VIR_DOMAIN_PAUSED_CRASHED.rawValue: "guest crashed"
        default: "reason \(reason)"
        }
    }
}
