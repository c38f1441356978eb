import Foundation

/// A session's identity: a UUID, also used (prefixed) as the name of its VM in the hypervisor.
public struct SessionID: Hashable, Codable, Sendable, CustomStringConvertible {
    public let uuid: UUID

    public init(_ uuid: UUID = UUID()) { self.uuid = uuid }

    /// Parses the lowercase (or any-case) textual UUID; nil if it is not one.
    public init?(_ string: String) {
        guard let uuid = UUID(uuidString: string) else { return nil }
        self.uuid = uuid
    }

    public var description: String { uuid.uuidString.lowercased() }

    /// The name of the session's VM in the hypervisor.
    public var machineName: String { "vms-\(description)" }

    /// The session id a VM name belongs to, if it is one of ours.
    public init?(machineName: String) {
        guard machineName.hasPrefix("vms-") else { return nil }
        self.init(String(machineName.dropFirst(4)))
    }

    public init(from decoder: any Decoder) throws {
        let string = try decoder.singleValueContainer().decode(String.self)
        guard let id = SessionID(string) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a session id"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
