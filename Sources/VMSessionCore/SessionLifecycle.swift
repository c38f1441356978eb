/// A session's state machine as a value: requests, completions and observations of the VM go in; the
/// state change (if any) comes out for the owner to persist, announce and act on. No I/O happens here.
public struct SessionLifecycle: Equatable, Sendable {
    public private(set) var state: SessionState
    /// The action being carried out, if any. While one runs, no other action is accepted.
    public private(set) var pending: SessionTransition?

    public init(state: SessionState, pending: SessionTransition? = nil) {
        self.state = state
        self.pending = pending
    }

    /// A change the owner should record and announce.
    public struct Change: Equatable, Sendable {
        public let from: SessionState
        public let to: SessionState
        public let reason: String

        public init(from: SessionState, to: SessionState, reason: String) {
            self.from = from
            self.to = to
            self.reason = reason
        }
    }

    /// Accepts `action` if the state allows it and nothing else is running; the session moves to the
    /// transition's `during` state. Throws `invalid_state` or `operation_in_progress` and changes nothing otherwise.
    /// A revert may say which state it reaches (`reaching`, see ``SessionTransition/reaching(_:)``).
    public mutating func request(_ action: SessionAction, reaching target: SessionState? = nil) throws(VMSessionError) -> SessionTransition {
        if let pending {
            throw VMSessionError(
                .operationInProgress,
                "The session is busy with '\(pending.action.rawValue)'; wait for it to finish before '\(action.rawValue)'.")
        }
        guard let transition = SessionTransition.of(action, from: state)?.reaching(target) else {
            let allowed = SessionTransition.allowedActions(in: state).map(\.rawValue)
            let hint = allowed.isEmpty ? "no action is allowed now" : "allowed: \(allowed.joined(separator: ", "))"
            throw VMSessionError(.invalidState, "Cannot \(action.rawValue) a session that is \(state.rawValue) (\(hint)).")
        }
        pending = transition
        state = transition.during
        return transition
    }

    /// Ends the pending action. Returns the change to announce, if the state moved.
    public mutating func complete(succeeded: Bool, reason: String) -> Change? {
        guard let transition = pending else { return nil }
        pending = nil
        let target = succeeded ? transition.onSuccess : transition.onFailure
        return move(to: target, reason: reason)
    }

    /// Takes in what the hypervisor reports about the VM when nothing is pending (a change from outside:
    /// the guest powered off, the process died, someone used virsh) and returns the change it implies.
    /// While an action runs, its own completion decides and observations are ignored.
    public mutating func observe(_ status: MachineStatus) -> Change? {
        guard pending == nil else { return nil }
        guard let (target, reason) = Self.state(for: status, current: state), target != state else { return nil }
        return move(to: target, reason: reason)
    }

    /// The session state that a VM status implies, given the current state, or nil to leave it be.
    static func state(for status: MachineStatus, current: SessionState) -> (SessionState, String)? {
        switch status {
        case .running: return (.running, "the VM is running")
        case .paused(let why): return (.paused, "the VM was paused (\(why))")
        // Still on: a shut-off event follows when the guest is done; the session is not `paused` meanwhile.
        case .shuttingDown: return (.running, "the guest is powering off")
        // The guest slept on its own: its process lives, `resume` would not wake it, and the controller
        // must not treat it as a pause of its own making.
        case .suspendedByGuest: return (.running, "the guest suspended itself (power management)")
        case .unknown: return nil
        case .crashed(let why): return (.error, "the VM crashed (\(why))")
        case .shutOff(_, hasSavedState: true): return (.saved, "the VM is hibernated")
        case .shutOff(let why, hasSavedState: false):
            switch why {
            // A process that ended badly is an error only if the session expected one (or already is in
            // error): libvirt keeps the reason of the last shut-off, so a VM redefined by `open` after a
            // crash still says "crashed", and that must not undo the open.
            case .processFailed, .crashed:
                let expectedProcess = current.hasRunningMachine || current == .error || current.isTransient
                return (expectedProcess ? .error : .open, why.rawValue)
            default: return (.open, why.rawValue)
            }
        case .absent:
            // A closed session has no VM by design; any other state has lost it.
            if current == .closed { return nil }
            return (.error, "the VM no longer exists in the hypervisor")
        }
    }

    private mutating func move(to target: SessionState, reason: String) -> Change? {
        let previous = state
        state = target
        guard previous != target else { return nil }
        return Change(from: previous, to: target, reason: reason)
    }
}
