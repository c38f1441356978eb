import Foundation
import VMSessionCore

/// An origin that asked to use the daemon, with the user's decision.
public struct OriginRecord: Codable, Equatable, Sendable {
    public var origin: WebOrigin
    public var status: WebOrigin.Status
    public var firstSeen: Date
    public var lastSeen: Date
    public var decidedAt: Date?
    /// Requests refused while the origin was not approved.
    public var requests: Int
    /// Approved as privileged: its pages may also change the idle-aware controller (idle time, start, stop).
    public var privileged: Bool
    /// What its pages' guests may reach, as the admin chose when approving it; nil: the daemon's default.
    public var egress: EgressPolicy?
    /// The labels a host must carry for this origin's sessions to be placed on it (the admin's choice when
    /// approving it; empty: any host).
    public var hostLabels: [String: String]

    public init(
        origin: WebOrigin, status: WebOrigin.Status, firstSeen: Date, lastSeen: Date, decidedAt: Date? = nil, requests: Int = 0,
        privileged: Bool = false, egress: EgressPolicy? = nil, hostLabels: [String: String] = [:]
    ) {
        self.egress = egress
        self.hostLabels = hostLabels
        self.privileged = privileged
        self.origin = origin
        self.status = status
        self.firstSeen = firstSeen
        self.lastSeen = lastSeen
        self.decidedAt = decidedAt
        self.requests = requests
    }
}
