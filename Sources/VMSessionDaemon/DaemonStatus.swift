import Foundation
import VMSessionCore

/// The idle-aware controller as `GET /api/v1/daemon` shows it: whether it runs, whether the desktop is
/// idle and since when, the threshold, and whether idle detection works (and why not).
public struct DaemonStatus: Codable, Equatable, Sendable {
    /// How the controller knows the desktop's idle state.
    public enum Detection: String, Codable, Sendable {
        /// From the X server's screen saver extension.
        case xscreensaver
        /// From a Wayland compositor's idle notifications (`ext-idle-notify-v1` or `org_kde_kwin_idle`).
        case wayland
        /// From GNOME's Mutter idle monitor on the session bus.
        case mutter
        /// From systemd-logind's idle hint on the system bus.
        case logind
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
    /// The idle source in use and why it was chosen.
    public var idleSource: IdleSourceStatus?
    /// When the idle state last changed (or the controller started).
    public var lastChange: Date?
    public var idleSince: Date?
    public var activeSince: Date?

    /// The idle source as the API shows it: what it is (e.g. `wayland org_kde_kwin_idle /run/user/1000/wayland-1`),
    /// its kind, and why it was chosen from the session's environment or the config.
    public struct IdleSourceStatus: Codable, Equatable, Sendable {
        public var name: String
        public var kind: String?
        public var reason: String

        public init(name: String, kind: String?, reason: String) {
            self.name = name
            self.kind = kind
            self.reason = reason
        }
    }
}

extension DaemonStatus.Detection {
    init?(_ kind: IdleSourceKind?) {
        guard let kind, let detection = Self(rawValue: kind.rawValue) else { return nil }
        self = detection
    }
}
