import Foundation

/// The idle-aware controller as `GET /api/v1/daemon` shows it: whether it runs, whether the desktop is
/// idle and since when, the threshold, and whether idle detection works (and why not).
public struct DaemonStatus: Codable, Equatable, Sendable {
    /// How the controller knows the desktop's idle state.
    public enum Detection: String, Codable, Sendable {
        /// From the X server's screen saver extension.
        case xscreensaver
        /// No usable X display, but a local program reports activity (`POST /api/v1/daemon/activity`).
        case reported
        /// Neither: the desktop counts as idle, so controlled VMs run at their max.
        case unavailable
    }

    public var isRunning: Bool
    public var isSystemIdle: Bool
    /// Seconds without input before the desktop counts as idle.
    public var idleTime: Int
    public var idleDetection: Detection
    /// Why detection is not `xscreensaver`, in words an admin can act on.
    public var idleDetectionReason: String?
    /// The X display used, if any.
    public var display: String?
    /// When the idle state last changed (or the controller started).
    public var lastChange: Date?
    public var idleSince: Date?
    public var activeSince: Date?
}
