import Foundation

/// Something that happened to a session, as it is stored and streamed: a monotonic id (assigned by the
/// store), the session, a type with a fixed wire name, and a JSON payload.
public struct SessionEvent: Equatable, Sendable {
    /// The event types and their wire names (the SSE `event:` field).
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case sessionCreated, stateChanged, progress, operationStarted, operationCompleted, operationFailed
        case executionCapChanged, propertyChanged, error, apiAvailable, apiUnavailable
        /// The idle-aware controller: a session's settings changed; the desktop became idle or active.
        case daemonControlChanged, idleChanged
        /// What the daemon did on the session's behalf, in words (the plugin's `debug(message)`): the image a
        /// version resolved to, the VM it defined, where the guest's API answers (through the daemon).
        case debug
        /// A snapshot of the session's VM was taken, reverted to, or deleted (payload: ``SessionEvent/SnapshotChanged``).
        case snapshotCreated, snapshotReverted, snapshotDeleted
        /// The libvirt host of the session's VM was lost (payload: ``SessionEvent/HostUnreachable``), or came back
        /// and the session was looked at again (``SessionEvent/HostReachable``).
        case hostUnreachable, hostReachable
    }

    public var id: Int64
    public var sessionID: SessionID
    public var kind: Kind
    /// The payload as a JSON object text.
    public var payload: String
    public var time: Date

    public init(id: Int64, sessionID: SessionID, kind: Kind, payload: String, time: Date) {
        self.id = id
        self.sessionID = sessionID
        self.kind = kind
        self.payload = payload
        self.time = time
    }
}
