import Foundation
import VMSessionCore
import VMSessionHypervisor

/// The VM's serial console: where its log and input socket are. The console exists once the VM has been
/// started (its log holds what the guest printed) until the session is closed; typing reaches the guest
/// while the VM has a process.
extension SessionManager {
    public func consoleEndpoints(of id: SessionID) throws(VMSessionError) -> ConsoleEndpoints {
        let state = try session(id).state
        guard let endpoints = hypervisor.console(of: id) else {
            throw VMSessionError(.notSupported, "This daemon's hypervisor gives VMs no console.")
        }
        guard state != .closed, state != .closing else {
            throw VMSessionError(.invalidState, "The session is \(state.rawValue): it has no console. Open and start it first.")
        }
        guard FileManager.default.fileExists(atPath: endpoints.log) else {
            throw VMSessionError(.invalidState, "The session's VM has not started yet, so it has no console output; start it first.")
        }
        return endpoints
    }
}

extension SessionManager {
    /// The console logs of the sessions that may have one (all but closed ones): what ``ConsoleLogTrimmer``
    /// keeps within bounds. A log that does not exist yet is in the list too.
    public func consoleLogs() -> [String] {
        allSessions().filter { $0.state != .closed }.compactMap { hypervisor.console(of: $0.id)?.log }
    }
}
