import Foundation

/// A JSON value for request bodies, so callers build bodies without `Any`.
public enum JSONValue: Encodable, Sendable, Equatable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    case string(String)
    case number(Double)
    case bool(Bool)
    case object([String: JSONValue])

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 1e15 { try container.encode(Int64(value)) } else { try container.encode(value) }
        case .bool(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

/// What `GET /api/v1` says about the daemon.
public struct DaemonInfo: Decodable, Sendable {
    public struct Hypervisor: Decodable, Sendable {
        public let driver: String
        public let uri: String
        public let accelerator: String?
    }
    public let name: String
    public let version: String
    public let hypervisor: Hypervisor
    public let imageVersions: [String]
}

/// The idle-aware controller's state (`GET /api/v1/daemon`).
public struct ControllerStatus: Decodable, Sendable {
    public let isRunning: Bool
    public let isSystemIdle: Bool
    public let idleTime: Int
}

/// A session as the daemon shows it.
public struct SessionInfo: Decodable, Sendable {
    public let id: String
    public let name: String
    public let state: String
    public let cpus: Int?
    public let memory: Int?
    public let disk: Int?
    public let version: String?
    public let executionCap: Int
    public let daemonControlled: Bool
    public let apiURL: String?
    /// What the guest may reach on the network, as its VM was last started.
    public let egress: String?
    /// The host the session's VM is placed on (absent from daemons before hosts).
    public let host: SessionHost?
    public let apiAvailable: Bool
    public let lastError: String?
    public let createdAt: Date
    public let updatedAt: Date
}

/// The answer to a session request: the session, its new token, and whether it was created now.
public struct SessionGrant: Decodable, Sendable {
    public let session: SessionInfo
    public let token: String
    public let created: Bool
}

/// The answer to an action: the operation it started and the session as it is now.
public struct ActionReceipt: Decodable, Sendable {
    public let operation: OperationInfo
    public let session: SessionInfo
}

/// A long action's progress and outcome.
public struct OperationInfo: Decodable, Sendable {
    public struct Failure: Decodable, Sendable {
        public let code: String
        public let message: String
    }
    public let id: String
    public let action: String
    public let status: String
    public let error: Failure?
}

/// A template's warm-up from an image (`POST /api/v1/templates` with `fromImage`): how far, how it ended.
public struct WarmUpInfo: Decodable, Sendable {
    public struct Progress: Decodable, Sendable {
        public let done: Int
        public let total: Int
        public let message: String
    }
    public let name: String
    public let image: String
    public let sessionId: String?
    public let status: String
    public let progress: Progress
    public let error: OperationInfo.Failure?
}

public struct OriginInfo: Decodable, Sendable {
    public let origin: String
    public let status: String
    public let privileged: Bool?
    /// What the origin's guests may reach, if the admin chose it (else the daemon's default).
    public let egress: String?
    /// The labels a host must carry for the origin's sessions to be placed on it (empty: any host).
    public let hostLabels: [String: String]?
}

public struct ImageInfo: Decodable, Sendable {
    public struct Download: Decodable, Sendable {
        public let bytes: Int
        public let totalBytes: Int?
    }
    public let version: String
    public let state: String
    public let format: String?
    public let size: Int?
    public let sha256: String?
    public let path: String?
    public let url: String?
    public let lastError: String?
    public let download: Download?
}

/// A snapshot of a session's VM: its name, when it was taken, the state a revert brings back, its size.
public struct SnapshotInfo: Decodable, Sendable {
    public let name: String
    public let created: Date
    public let state: String
    public let bytes: Int64
}

public struct TemplateInfo: Decodable, Sendable {
    public let name: String
    public let created: Date
    public let fromSession: String
    public let baseVersion: String
    public let cpus: Int
    public let memory: Int
    public let disk: Int
    public let bytes: Int64
    public let sessions: [String]
    /// The host its files are on (nil from a daemon before templates on remote hosts).
    public let host: String?
}

struct SessionList: Decodable { let sessions: [SessionInfo] }
struct TemplateList: Decodable { let templates: [TemplateInfo] }
struct SnapshotList: Decodable { let snapshots: [SnapshotInfo] }
struct OriginList: Decodable { let origins: [OriginInfo] }
struct ImageList: Decodable { let images: [ImageInfo] }
struct Property: Decodable { let name: String; let value: String }
struct ErrorReply: Decodable {
    struct Body: Decodable {
        let code: String
        let message: String
    }
    let error: Body
}
