import Foundation

/// A session's identity: a UUID, also used (prefixed) as the name of its VM in the hypervisor.
public struct SessionID: UUIDIdentifier {
    public let uuid: UUID

    public init(_ uuid: UUID = UUID()) { self.uuid = uuid }

    /// The name of the session's VM in the hypervisor.
    public var machineName: String { "vms-\(description)" }

    /// The session id a VM name belongs to, if it is one of ours.
    public init?(machineName: String) {
        guard machineName.hasPrefix("vms-") else { return nil }
        self.init(String(machineName.dropFirst(4)))
    }
}
