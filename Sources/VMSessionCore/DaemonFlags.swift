/// The plugin's `daemonFlags` bits, kept with their values so that pages written against it still work.
public struct DaemonFlags: OptionSet, Hashable, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// DF_SUSPEND: with minCap 0, hibernate while the user is active and restore while idle (not pause).
    public static let suspend = DaemonFlags(rawValue: 0x1)
    /// DF_AUTOSTART: start a shut-down VM (state `open`) while the user is idle.
    public static let autostart = DaemonFlags(rawValue: 0x2)

    public static let all: DaemonFlags = [.suspend, .autostart]
}
