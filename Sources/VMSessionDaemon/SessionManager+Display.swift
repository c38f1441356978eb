import VMSessionCore
import VMSessionHypervisor

/// The VM's screen: where its VNC display listens, and screenshots. Both exist only while the VM has a
/// process (running or paused); otherwise the answer is `invalid_state` (409).
extension SessionManager {
    /// The Unix socket of the session's VNC display.
    public func displaySocket(of id: SessionID) throws(VMSessionError) -> String {
        try requireMachine(of: id)
        guard let path = hypervisor.displaySocket(of: id) else {
            throw VMSessionError(.notSupported, hypervisor.noDisplayReason(of: id))
        }
        return path
    }

    /// A PNG of the session's screen. libvirt reads it through its own connection, so it needs no display
    /// socket here: a VM on a host reached over TLS has a screenshot but no display.
    public func screenshot(of id: SessionID) async throws(VMSessionError) -> [UInt8] {
        try requireMachine(of: id)
        return try await hypervisor.screenshot(of: id)
    }

    private func requireMachine(of id: SessionID) throws(VMSessionError) {
        let state = try session(id).state
        guard state.hasRunningMachine else {
            throw VMSessionError(.invalidState, "The session has no display while it is \(state.rawValue); start or resume it first.")
        }
    }
}
