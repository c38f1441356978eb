import Foundation

/// A session as callers see it: identity, state, what it was opened with, its cap and controller
/// settings. Secrets are never part of it.
public struct Session: Codable, Equatable, Sendable {
    public var id: SessionID
    public var name: String
    public var state: SessionState
    /// What `open` asked for; nil until the session was opened once.
    public var requirements: Requirements?
    public var executionCap: ExecutionCap
    public var daemon: DaemonControl
    /// The last failure, kept until the next successful action.
    public var lastError: String?
    /// The operation running on the session, if any.
    public var operationID: OperationID?
    /// What the guest may reach on the network, as its VM was last started with; nil before a start
    /// (and for a VM with no network).
    public var egress: EgressPolicy?
    /// The libvirt host the session's VM is placed on (issue 22): set when it is opened from closed, kept until
    /// it is opened again; `local` (the daemon's own host) until then, and on a daemon with no other hosts.
    public var host: String
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: SessionID, name: String, state: SessionState = .closed, requirements: Requirements? = nil,
        executionCap: ExecutionCap = .unlimited, daemon: DaemonControl = .init(), lastError: String? = nil,
        operationID: OperationID? = nil, egress: EgressPolicy? = nil, host: String = HostDefinition.localName, createdAt: Date,
        updatedAt: Date
    ) {
        self.egress = egress
        self.host = host
        self.id = id
        self.name = name
        self.state = state
        self.requirements = requirements
        self.executionCap = executionCap
        self.daemon = daemon
        self.lastError = lastError
        self.operationID = operationID
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}
