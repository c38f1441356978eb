import Foundation
import VMSessionCore

/// What the idle-aware controller and the daemon routes need from the one owner of session state.
extension SessionManager {
    /// Changes a session's controller settings; absent fields keep their value. The merged settings are
    /// validated before anything changes, then saved with a `daemonControlChanged` event (which also
    /// makes the controller apply its current decision to the session).
    public func updateDaemonControl(
        on id: SessionID, controlled: Bool?, minCap: Int?, maxCap: Int?, flags: Int?
    ) throws(VMSessionError) -> Session {
        guard var entry = sessions[id] else { throw VMSessionError(.notFound, "There is no session \(id).") }
        var control = entry.session.daemon
        if let controlled { control.controlled = controlled }
        if let minCap { control.minCap = minCap }
        if let maxCap { control.maxCap = maxCap }
        if let flags { control.flags = flags }
        try control.validate()
        guard control != entry.session.daemon else { return entry.session }
        entry.session.daemon = control
        entry.session.updatedAt = Date()
        let toStore = entry
        _ = try storeCall {
            try events.record {
                let recorded = try store.update(toStore, events: [(.daemonControlChanged, SessionEvent.encode(control))])
                sessions[id] = toStore
                return recorded
            }
        }
        logger.info(
            "controller settings changed",
            metadata: ["session": "\(id)", "controlled": "\(control.controlled)", "minCap": "\(control.minCap)",
                       "maxCap": "\(control.maxCap)", "flags": "\(control.flags)"])
        return entry.session
    }

    /// The sessions the controller acts on: those that opted in and run on the local host. The controller lends
    /// this desktop's idle CPU; a session on another host does not use it, so the desktop's activity leaves it alone.
    public func controlledSessions() -> [Session] {
        sessions.values.map(\.session).filter(Self.lendsThisDesktop).sorted { $0.createdAt < $1.createdAt }
    }

    static func lendsThisDesktop(_ session: Session) -> Bool {
        session.daemon.controlled && session.host == HostDefinition.localName
    }

    /// Writes `idleChanged` on the stream of every controlled session, before the controller acts on them.
    public func announceIdle(_ idle: Bool) {
        let ids = sessions.values.map(\.session).filter(Self.lendsThisDesktop).map(\.id)
        guard !ids.isEmpty else { return }
        let payload = SessionEvent.encode(SessionEvent.IdleChanged(idle: idle))
        recordOrLog("idleChanged", session: nil) { try store.append(.idleChanged, payload: payload, forEach: ids, at: Date()) }
    }

    /// What `GET /sessions/{id}` shows, checked against the caller's token, from ``readModel`` (no visit to
    /// the actor); the hypervisor is asked for live figures only while the VM has a process.
    public nonisolated func snapshot(of id: SessionID, token: String?) async throws(VMSessionError) -> SessionSnapshot {
        try access.authorize(token: token, for: id)
        let (session, apiAvailable) = try readModel.view(of: id)
        guard session.state.hasRunningMachine else {
            return SessionSnapshot(session: session, apiAvailable: apiAvailable, cpuTime: nil, appliedCap: nil)
        }
        let hypervisor = self.hypervisor
        async let cpuTime = try? hypervisor.cpuTime(of: id)
        async let appliedCap = try? hypervisor.appliedExecutionCap(of: id)
        return SessionSnapshot(session: session, apiAvailable: apiAvailable, cpuTime: (await cpuTime) ?? nil, appliedCap: (await appliedCap) ?? nil)
    }}

extension SessionManager {
    /// What a controller step came to: the step, and the error if the manager refused or failed it.
    public struct ControllerOutcome: Sendable {
        public let step: ControllerStep
        public let error: VMSessionError?
    }

    /// Applies the controller's policy to one session, deciding on the session as it is now (inside the
    /// actor, so a change that arrived meanwhile is seen) and acting through the same paths as the API:
    /// ``perform(_:on:input:)`` and ``setExecutionCap(_:on:reason:)`` with reason `controller`.
    /// Returns nil when there is nothing to do, the session has an action under way (it is looked at again
    /// when that ends), or the step is in `skipping` (it failed recently).
    public func applyController(idle: Bool, to id: SessionID, skipping: Set<ControllerStep> = []) async -> ControllerOutcome? {
        guard let session = sessions[id]?.session, pending[id] == nil,
            let step = ControllerPolicy.decide(session.daemon, state: session.state, cap: session.executionCap, idle: idle),
            !skipping.contains(step)
        else { return nil }
        do {
            switch step {
            case .setCap(let cap): _ = try await setExecutionCap(cap, on: id, reason: .controller)
            case .perform(let action): _ = try await perform(action, on: id)
            }
            return ControllerOutcome(step: step, error: nil)
        } catch {
            return ControllerOutcome(step: step, error: error)
        }
    }
}

/// A session with the live figures the API shows next to it.
public struct SessionSnapshot: Sendable {
    public let session: Session
    /// Whether the guest's API answered its last probes.
    public let apiAvailable: Bool
    /// CPU time the VM used so far, in nanoseconds, while it has a process.
    public let cpuTime: UInt64?
    /// The cap libvirt applies right now, while the VM has a process.
    public let appliedCap: ExecutionCap?
}
