/// How the X11 idle source learns of the user's input, chosen from what the X server offers.
///
/// The SYNC extension's `IDLETIME` system counter with alarms tells of changes (an alarm when the idle
/// time reaches a value, another on the next input), so the daemon sleeps on the connection until the
/// desktop changes; this is how GNOME's idle monitor worked on X11. `XScreenSaverQueryInfo` only answers
/// a question, so it must be asked again and again: it stays as the fallback for servers without SYNC or
/// its counter (servers older than X.Org 1.8, some remote or nested servers), or when the admin asks for it.
/// Pure: what the server offers in, the method and why out.
public enum X11IdleMethod: String, Sendable, Equatable {
    /// XSync `IDLETIME` alarms: announced, no polling.
    case xsync
    /// `XScreenSaverQueryInfo`, read by the controller at its own pace.
    case screenSaver

    /// The `x11Idle` setting: `auto` prefers XSync, `poll` always reads the screen saver extension.
    public enum Preference: String, Sendable, CaseIterable {
        case auto, poll
    }

    /// What the X server said it has.
    public struct Offer: Sendable, Equatable {
        public var sync: Bool
        public var idleCounter: Bool
        public var screenSaver: Bool

        public init(sync: Bool, idleCounter: Bool, screenSaver: Bool) {
            self.sync = sync
            self.idleCounter = idleCounter
            self.screenSaver = screenSaver
        }
    }

    /// The method for this server, or nil with why none fits; the reason says what was missing.
    public static func choose(_ offer: Offer, preference: Preference = .auto) -> (method: X11IdleMethod?, reason: String) {
        let why: String? =
            preference == .poll ? "configured (x11Idle: poll)"
            : !offer.sync ? "the server has no SYNC extension"
            : !offer.idleCounter ? "the server's SYNC extension has no IDLETIME counter"
            : nil
        guard let why else { return (.xsync, "XSync IDLETIME alarms") }
        guard offer.screenSaver else { return (nil, why + ", and it has no MIT-SCREEN-SAVER extension") }
        return (.screenSaver, "XScreenSaver, polled: " + why)
    }
}
