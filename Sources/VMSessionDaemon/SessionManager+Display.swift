import VMSessionCore
import VMSessionHypervisor

/// The VM's screen: where its VNC display listens, and screenshots. Both exist only while the VM has a
/// process (running or paused); otherwise the answer is `invalid_state` (409).
extension SessionManager {
    /// The Unix socket of the session's VNC display.
    public func displaySocket(of id: SessionID) throws(VMSessionError) -> String {
        let state = try session(id).state
        guard state.hasRunningMachine else {
            throw VMSessionError(.invalidState, "The session has no display while it is \(state.rawValue); start or resume it first.")
        }
        guard let path = hypervisor.displaySocket(of: id) else {
            throw VMSessionError(.notSupported, "This daemon's hypervisor gives VMs no display.")
        }
        return path
    }

    /// A PNG of the session's screen.
    public func screenshot(of id: SessionID) async throws(VMSessionError) -> [UInt8] {
        _ = try displaySocket(of: id)
        return try await hypervisor.screenshot(of: id)
    }
}
