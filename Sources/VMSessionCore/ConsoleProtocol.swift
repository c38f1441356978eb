/// The console's WebSocket messages (`GET /api/v1/sessions/{id}/console`), in one place so that the daemon,
/// its contract (`Schema/openapi.yaml`) and `vmsession.js` agree.
///
/// - Binary frames from the daemon are the guest's output, bytes as the serial port gave them: first the
///   history, then live output.
/// - Text frames from the daemon are JSON control messages (``ConsoleControl``): `hello` first of all.
/// - Frames from a writer (binary or text) are keystrokes, sent to the serial port as they are. A
///   read-only viewer that sends anything is closed (``ConsoleClose/readOnly``).
public enum ConsoleProtocol {
    /// Who a console client is: `?mode=write` (the default) may type, `?mode=read` only watches.
    public enum Mode: String, Codable, Sendable, CaseIterable {
        case write, read

        /// The `mode` query parameter; nil means the default (write).
        public init(query: String?) throws(VMSessionError) {
            guard let query else {
                self = .write
                return
            }
            guard let mode = Mode(rawValue: query) else {
                throw VMSessionError(.invalidArgument, "'mode' must be 'read' or 'write'; got '\(query.prefix(64))'.")
            }
            self = mode
        }
    }
}

/// A JSON control message from the daemon to a console client.
public struct ConsoleControl: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable {
        /// The first message: the client's mode and how many bytes of history follow (binary frames).
        case hello
        /// Something the client should show its user (typing while the VM has no process, for one).
        case notice
    }

    public var type: Kind
    public var mode: ConsoleProtocol.Mode?
    public var history: Int?
    public var message: String?

    public static func hello(mode: ConsoleProtocol.Mode, history: Int) -> ConsoleControl {
        ConsoleControl(type: .hello, mode: mode, history: history, message: nil)
    }

    public static func notice(_ message: String) -> ConsoleControl {
        ConsoleControl(type: .notice, mode: nil, history: nil, message: message)
    }
}

/// Why the daemon closes a console client, with the WebSocket close code and a reason a user can act on
/// (close reasons are at most 123 bytes).
public enum ConsoleClose: Equatable, Sendable {
    /// The session was closed or deleted: its console is gone.
    case sessionClosed
    /// The daemon is shutting down; reconnect when it is back.
    case shuttingDown
    /// A read-only viewer sent input.
    case readOnly
    /// A writer typed more than its ``ConsoleInputBudget`` allows.
    case typingTooFast(bytesPerSecond: Int)
    /// The client read too little: output waiting for it passed the per-viewer bound.
    case tooSlow(bufferedBytes: Int)
    /// The token was revoked or the session deleted.
    case revoked
    /// The console's log could not be read.
    case failed

    /// The WebSocket close code (RFC 6455): 1001 going away, 1008 policy violation, 1011 server error.
    public var code: UInt16 {
        switch self {
        case .sessionClosed, .shuttingDown: 1001
        case .readOnly, .typingTooFast, .tooSlow, .revoked: 1008
        case .failed: 1011
        }
    }

    public var reason: String {
        switch self {
        case .sessionClosed: "the session was closed: its console is gone"
        case .shuttingDown: "the daemon is shutting down; reconnect when it is back"
        case .readOnly: "this console viewer is read-only (mode=read): input is not accepted"
        case .typingTooFast(let rate): "typing too fast: more than \(rate / 1024) KiB/s of input"
        case .tooSlow(let bytes): "viewer too slow: more than \(bytes / 1024) KiB of output waited for it"
        case .revoked: "the token was revoked or the session deleted"
        case .failed: "the console's output could not be read"
        }
    }
}
