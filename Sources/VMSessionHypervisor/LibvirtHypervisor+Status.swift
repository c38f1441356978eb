import Libvirt
import VMSessionCore

extension LibvirtHypervisor {
    /// Translates libvirt's view of a domain into the session-level ``MachineStatus``.
    static func status(of domain: Domain) throws(LibvirtError) -> MachineStatus {
        switch try domain.state() {
        case .running: return .running
        case .paused(let reason): return .paused(reason: reason)
        case .crashed(let reason): return .crashed(reason: reason)
        case .shuttingDown: return .shuttingDown
        case .suspendedByGuest: return .suspendedByGuest
        case .noState: return .unknown
        case .shutOff(let reason):
            let saved = try domain.hasManagedSave()
            let why: MachineStatus.ShutOffReason =
                switch reason {
                case .shutdown: .guestShutdown
                case .destroyed: .destroyed
                case .crashed: .crashed
                case .failed: .processFailed
                case .saved: .saved
                case .unknown: .neverStarted
                case .fromSnapshot, .daemon: .other
                }
            return .shutOff(reason: why, hasSavedState: saved)
        }
    }
}
