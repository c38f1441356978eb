import Foundation

extension SessionEvent {
    /// `stateChanged`: the session moved; `reason` says why in words a user understands.
    public struct StateChanged: Codable, Equatable, Sendable {
        public var state: SessionState
        public var stateCode: Int
        public var previous: SessionState
        public var reason: String
        public init(state: SessionState, previous: SessionState, reason: String) {
            self.state = state
            self.stateCode = state.legacyCode
            self.previous = previous
            self.reason = reason
        }
    }

    /// `progress`: an operation advanced. `bytes`, `totalBytes` and `bytesPerSecond` are present while an
    /// image downloads (`totalBytes` only when the server sent a length).
    public struct ProgressUpdate: Codable, Equatable, Sendable {
        public var operation: OperationID
        public var action: SessionAction
        public var done: Int
        public var total: Int
        public var message: String
        public var fraction: Double
        public var bytes: Int64?
        public var totalBytes: Int64?
        public var bytesPerSecond: Double?
        public init(operation: OperationID, action: SessionAction, progress: SessionOperation.Progress) {
            self.operation = operation
            self.action = action
            self.done = progress.done
            self.total = progress.total
            self.message = progress.message
            self.fraction = progress.fraction
            self.bytes = progress.bytes
            self.totalBytes = progress.totalBytes
            self.bytesPerSecond = progress.bytesPerSecond
        }
    }

    /// `operationStarted`, `operationCompleted`, `operationFailed`.
    public struct OperationUpdate: Codable, Equatable, Sendable {
        public var operation: OperationID
        public var action: SessionAction
        public var error: SessionOperation.ErrorInfo?
        public init(operation: OperationID, action: SessionAction, error: SessionOperation.ErrorInfo? = nil) {
            self.operation = operation
            self.action = action
            self.error = error
        }
    }

    /// `executionCapChanged`: who changed the cap (`user` or `controller`) and to what.
    public struct ExecutionCapChanged: Codable, Equatable, Sendable {
        public var cap: Int
        public var reason: ExecutionCapReason
        public init(cap: ExecutionCap, reason: ExecutionCapReason) {
            self.cap = cap.percent
            self.reason = reason
        }
    }

    /// `propertyChanged`: a guest property was set.
    public struct PropertyChanged: Codable, Equatable, Sendable {
        public var name: String
        public var value: String
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// `debug`: a line of what the daemon did for the session.
    public struct Debug: Codable, Equatable, Sendable {
        public var message: String
        public init(_ message: String) { self.message = message }
    }

    /// `apiAvailable`: the guest's API answers at `apiURL` (the plugin's `apiAvailable(ip, apiURL)`).
    public struct GuestAPIAvailable: Codable, Equatable, Sendable {
        public var apiURL: String
        public var ip: String
        public init(apiURL: String, ip: String) {
            self.apiURL = apiURL
            self.ip = ip
        }
    }

    /// `apiUnavailable`: the guest's API stopped answering, or the VM stopped running.
    public struct GuestAPIUnavailable: Codable, Equatable, Sendable {
        public var reason: String
        public init(reason: String) { self.reason = reason }
    }

    /// `hostUnreachable`: the host of the session's VM stopped answering; actions on the VM answer
    /// `host_unreachable` until it is back (a close forgets the session, and its VM goes when the host returns).
    public struct HostUnreachable: Codable, Equatable, Sendable {
        public var host: String
        public var reason: String
        public var since: Date
        public init(host: String, reason: String, since: Date) {
            self.host = host
            self.reason = reason
            self.since = since
        }
    }

    /// `hostReachable`: the host of the session's VM is connected again; the session is reconciled with its VM.
    public struct HostReachable: Codable, Equatable, Sendable {
        public var host: String
        public init(host: String) { self.host = host }
    }

    /// `idleChanged`: the desktop became idle (the controller lends the CPU) or active (it takes it back).
    /// Written on the stream of every controlled session, so that replay works as for any other event.
    public struct IdleChanged: Codable, Equatable, Sendable {
        public var idle: Bool
        public init(idle: Bool) { self.idle = idle }
    }

    /// `sessionCreated`: the first requester took the name.
    public struct SessionCreated: Codable, Equatable, Sendable {
        public var name: String
        public init(name: String) { self.name = name }
    }

    /// A snapshot taken, reverted to or deleted: which, and (taken, reverted) the state it holds.
    public struct SnapshotChanged: Codable, Equatable, Sendable {
        public var name: String
        public var state: SessionState?
        public var bytes: Int64?
        public init(name: String, state: SessionState? = nil, bytes: Int64? = nil) {
            self.name = name
            self.state = state
            self.bytes = bytes
        }
    }

    /// Encodes a payload as the JSON object text that events carry.
    public static func encode(_ payload: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(payload) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
