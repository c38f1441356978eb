/// What a user (or the idle controller) can ask of a session.
public enum SessionAction: String, Codable, Sendable, CaseIterable {
    case open, start, pause, resume, stop, hibernate, reset, close

    /// Whether the action runs as a background operation (202 + operation) rather than inline.
    public var isLong: Bool {
        switch self {
        case .open, .start, .stop, .hibernate, .close: true
        case .pause, .resume, .reset: false
        }
    }
}
