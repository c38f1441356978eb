import VMSessionCore

/// Where the desktop's idle time comes from. The controller only needs "milliseconds since the last
/// input"; the X screen saver extension is the real source, and tests put a fake here for logic.
public protocol IdleSource: Sendable {
    /// What the source is, for `GET /api/v1/daemon` (e.g. `xscreensaver :0`).
    var name: String { get }
    /// Milliseconds since the user last touched the keyboard or mouse. Throws `unavailable` (with a
    /// message saying why) when the source cannot tell right now.
    func idleMilliseconds() async throws(VMSessionError) -> UInt64
}
