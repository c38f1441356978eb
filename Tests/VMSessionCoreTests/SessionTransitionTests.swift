import Testing
import VMSessionCore

/// The state machine, checked pair by pair against the table in DESIGN.md, written out here independently
/// of the implementation.
@Suite("Session state machine")
struct SessionTransitionTests {
    /// (state, action) -> (during, on success, on failure). Every pair not listed must be refused.
    static let expected: [SessionState: [SessionAction: (SessionState, SessionState, SessionState)]] = [
        .closed: [.open: (.opening, .open, .error)],
        .open: [
            .start: (.starting, .running, .error), .close: (.closing, .closed, .error), .deleteSnapshot: (.open, .open, .open),
        ],
        .running: [
            .pause: (.running, .paused, .running), .stop: (.stopping, .open, .error),
            .hibernate: (.saving, .saved, .error), .reset: (.running, .running, .running),
            .close: (.closing, .closed, .error), .snapshot: (.running, .running, .running),
            .revert: (.running, .running, .error), .deleteSnapshot: (.running, .running, .running),
            .makeTemplate: (.saving, .running, .error),
        ],
        .paused: [
            .resume: (.paused, .running, .paused), .stop: (.stopping, .open, .error),
            .hibernate: (.saving, .saved, .error), .close: (.closing, .closed, .error),
            .snapshot: (.paused, .paused, .paused), .revert: (.paused, .paused, .error), .deleteSnapshot: (.paused, .paused, .paused),
        ],
        .saved: [.start: (.starting, .running, .error), .close: (.closing, .closed, .error)],
        .error: [
            .open: (.opening, .open, .error), .start: (.starting, .running, .error), .close: (.closing, .closed, .error),
        ],
    ]

    @Test("every (state, action) pair matches the design table", arguments: SessionState.allCases)
    func everyPairMatchesTheTable(state: SessionState) {
        for action in SessionAction.allCases {
            let transition = SessionTransition.of(action, from: state)
            if let (during, success, failure) = Self.expected[state]?[action] {
                #expect(transition?.during == during, "\(state) + \(action)")
                #expect(transition?.onSuccess == success, "\(state) + \(action)")
                #expect(transition?.onFailure == failure, "\(state) + \(action)")
            } else {
                #expect(transition == nil, "\(state) + \(action) must be refused")
            }
        }
    }

    @Test("a refused action throws invalid_state, names the allowed ones, and changes nothing", arguments: SessionState.allCases)
    func refusedActionChangesNothing(state: SessionState) {
        for action in SessionAction.allCases where SessionTransition.of(action, from: state) == nil {
            var lifecycle = SessionLifecycle(state: state)
            #expect {
                _ = try lifecycle.request(action)
            } throws: { error in
                guard let error = error as? VMSessionError else { return false }
                return error.code == .invalidState && error.code.legacyCode == -8
            }
            #expect(lifecycle == SessionLifecycle(state: state))
        }
    }

    /// An action may skip storing its intent only if a daemon killed during it leaves nothing the next start
    /// cannot read back from the VM: no state of its own while it runs, and its session as it was if it fails.
    @Test("only actions that keep the session's state while they run and on failure skip the intent record", arguments: SessionState.allCases)
    func actionsWithoutAnIntentRecordLeaveTheStateAlone(state: SessionState) {
        for action in SessionAction.allCases where !action.recordsIntentFirst {
            guard let transition = SessionTransition.of(action, from: state) else { continue }
            #expect(transition.during == state, "\(state) + \(action)")
            #expect(transition.onFailure == state, "\(state) + \(action)")
            #expect(!action.isLong && !action.isSnapshotAction, "\(action) runs inline, on the VM alone")
        }
    }

    @Test("pause, resume and reset are the actions stored only with their end")
    func actionsStoredWithTheirEnd() {
        #expect(SessionAction.allCases.filter { !$0.recordsIntentFirst } == [.pause, .resume, .reset])
    }

    @Test("legacy state codes are the plugin's, and transient states have codes of their own")
    func legacyCodes() {
        let codes = Dictionary(uniqueKeysWithValues: SessionState.allCases.map { ($0, $0.legacyCode) })
        #expect(codes[.closed] == 0 && codes[.opening] == 1 && codes[.open] == 2 && codes[.starting] == 3)
        #expect(codes[.running] == 4 && codes[.error] == 5 && codes[.paused] == 6 && codes[.saved] == 7)
        #expect(Set(codes.values).count == SessionState.allCases.count)
    }

    @Test("transient states allow no action")
    func transientStatesAllowNothing() {
        for state in SessionState.allCases where state.isTransient {
            #expect(SessionTransition.allowedActions(in: state).isEmpty)
        }
    }
}
