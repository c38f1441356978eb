/// The effect of an accepted action: the state the session shows while the action runs and the state it
/// reaches when the action succeeds. A failed action leaves the session in ``failureState``.
public struct SessionTransition: Equatable, Sendable {
    public let action: SessionAction
    public let from: SessionState
    public let during: SessionState
    public let onSuccess: SessionState
    public let onFailure: SessionState

    /// The session state machine: the only place that says which action is allowed in which state.
    /// Returns nil when the action is not allowed in `state`.
    public static func of(_ action: SessionAction, from state: SessionState) -> SessionTransition? {
        func to(_ during: SessionState, _ success: SessionState, failure: SessionState = .error) -> SessionTransition {
            SessionTransition(action: action, from: state, during: during, onSuccess: success, onFailure: failure)
        }
        switch (state, action) {
        case (.closed, .open), (.error, .open): return to(.opening, .open)
        case (.open, .start), (.saved, .start), (.error, .start): return to(.starting, .running)
        case (.running, .pause): return to(.running, .paused, failure: .running)
        case (.paused, .resume): return to(.paused, .running, failure: .paused)
        case (.running, .reset): return to(.running, .running, failure: .running)
        case (.running, .stop), (.paused, .stop): return to(.stopping, .open)
        case (.running, .hibernate), (.paused, .hibernate): return to(.saving, .saved)
        // A snapshot leaves the VM as it was; a revert reaches the snapshot's state (see ``reaching(_:)``), and a
        // failed one leaves a VM nobody can vouch for.
        case (.running, .snapshot), (.paused, .snapshot), (.running, .deleteSnapshot), (.paused, .deleteSnapshot),
            (.open, .deleteSnapshot):
            return to(state, state, failure: state)
        case (.running, .revert), (.paused, .revert): return to(state, state)
        // Its memory is saved (the VM stops for it) and restored: it is running again after, or nobody can
        // vouch for it.
        case (.running, .makeTemplate): return to(.saving, .running)
        case (.open, .close), (.running, .close), (.paused, .close), (.saved, .close), (.error, .close):
            return to(.closing, .closed)
        default: return nil
        }
    }

    /// The same transition, succeeding in `target`: a revert ends running or paused as its snapshot was taken,
    /// which the table cannot know. Only a revert's target can be chosen.
    public func reaching(_ target: SessionState?) -> SessionTransition {
        guard let target, action == .revert, target == .running || target == .paused else { return self }
        return SessionTransition(action: action, from: from, during: during, onSuccess: target, onFailure: onFailure)
    }

    /// The actions allowed in `state`, for error messages and documentation.
    public static func allowedActions(in state: SessionState) -> [SessionAction] {
        SessionAction.allCases.filter { of($0, from: state) != nil }
    }
}
