/// What the hypervisor says about a session's VM, independent of libvirt's numbers.
public enum MachineStatus: Equatable, Sendable, CustomStringConvertible {
    /// No VM is defined for the session.
    case absent
    /// Defined and not running; `hasSavedState` when a hibernation image waits to be restored.
    case shutOff(reason: ShutOffReason, hasSavedState: Bool)
    case running
    case paused(reason: String)
    /// The guest is powering off (libvirt's "shutting down"): its process still runs until it is off.
    case shuttingDown
    /// The guest put itself to sleep (ACPI S3/S4, libvirt's "pmsuspended"). Not a pause a user or the
    /// controller made: `resume` cannot wake it, and the session keeps its process.
    case suspendedByGuest
    /// libvirt cannot say (`VIR_DOMAIN_NOSTATE`); nothing is concluded from it.
    case unknown
    /// The guest crashed or the VM process died and the hypervisor kept it in that state.
    case crashed(reason: String)

    /// Why a VM is off.
    public enum ShutOffReason: String, Equatable, Sendable {
        case neverStarted = "never started"
        case guestShutdown = "the guest powered off"
        case destroyed = "the VM was powered off from outside"
        case processFailed = "the VM's process ended unexpectedly"
        case crashed = "the VM crashed or its process was killed"
        case saved = "hibernated"
        case other = "stopped"
    }

    public var description: String {
        switch self {
        case .absent: "absent"
        case .shutOff(let reason, let saved): saved ? "shut off (saved)" : "shut off (\(reason.rawValue))"
        case .running: "running"
        case .paused(let reason): "paused (\(reason))"
        case .shuttingDown: "shutting down"
        case .suspendedByGuest: "suspended by the guest"
        case .unknown: "unknown"
        case .crashed(let reason): "crashed (\(reason))"
        }
    }
}
