import Foundation

/// An operation's identity.
public struct OperationID: UUIDIdentifier {
    public let uuid: UUID
    public init(_ uuid: UUID = UUID()) { self.uuid = uuid }
}

/// A session action in progress or done, as pages follow it: what, how far, how it ended.
public struct SessionOperation: Codable, Equatable, Sendable {
    public enum Status: String, Codable, Sendable {
        case running, succeeded, failed
    }

    public var id: OperationID
    public var sessionID: SessionID
    public var action: SessionAction
    public var status: Status
    public var progress: Progress
    public var error: ErrorInfo?
    public var createdAt: Date
    public var updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, sessionID = "sessionId", action, status, progress, error, createdAt, updatedAt
    }

    public init(
        id: OperationID = OperationID(), sessionID: SessionID, action: SessionAction, status: Status = .running,
        progress: Progress = Progress(done: 0, total: 1, message: "queued"), error: ErrorInfo? = nil,
        createdAt: Date, updatedAt: Date
    ) {
        self.id = id
        self.sessionID = sessionID
        self.action = action
        self.status = status
        self.progress = progress
        self.error = error
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    /// Steps done out of a total, and what is being done (the plugin's `progress(done, pending, msg)`).
    /// While bytes are transferred (an image download), `bytes`, `totalBytes` (only when the server says)
    /// and `bytesPerSecond` say how far.
    public struct Progress: Codable, Equatable, Sendable {
        public var done: Int
        public var total: Int
        public var message: String
        public var bytes: Int64?
        public var totalBytes: Int64?
        public var bytesPerSecond: Double?
        public var fraction: Double { total > 0 ? min(1, Double(done) / Double(total)) : 0 }

        public init(done: Int, total: Int, message: String, bytes: Int64? = nil, totalBytes: Int64? = nil, bytesPerSecond: Double? = nil) {
            self.done = done
            self.total = total
            self.message = message
            self.bytes = bytes
            self.totalBytes = totalBytes
            self.bytesPerSecond = bytesPerSecond
        }

        enum CodingKeys: String, CodingKey { case done, total, message, fraction, bytes, totalBytes, bytesPerSecond }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            done = try container.decode(Int.self, forKey: .done)
            total = try container.decode(Int.self, forKey: .total)
            message = try container.decode(String.self, forKey: .message)
            bytes = try container.decodeIfPresent(Int64.self, forKey: .bytes)
            totalBytes = try container.decodeIfPresent(Int64.self, forKey: .totalBytes)
            bytesPerSecond = try container.decodeIfPresent(Double.self, forKey: .bytesPerSecond)
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(done, forKey: .done)
            try container.encode(total, forKey: .total)
            try container.encode(message, forKey: .message)
            try container.encode(fraction, forKey: .fraction)
            try container.encodeIfPresent(bytes, forKey: .bytes)
            try container.encodeIfPresent(totalBytes, forKey: .totalBytes)
            try container.encodeIfPresent(bytesPerSecond, forKey: .bytesPerSecond)
        }
    }

    /// An error as it is recorded and sent: stable code, legacy number, message.
    public struct ErrorInfo: Codable, Equatable, Sendable {
        public var code: String
        public var legacyCode: Int
        public var message: String

        public init(_ error: VMSessionError) {
            self.code = error.code.rawValue
            self.legacyCode = error.code.legacyCode
            self.message = error.message
        }
    }
}
