/// A session's opt-in to the idle-aware controller (the plugin's `daemonControlled`, `daemonMinCap`,
/// `daemonMaxCap`, `daemonFlags`). It exists so that a page can lend its VM's CPU to the desktop's idle
/// time: see ``ControllerPolicy`` for what each combination makes the controller do.
public struct DaemonControl: Codable, Equatable, Sendable {
    public var controlled: Bool
    /// Cap while the user is active; 0 means "pause (or hibernate, with ``DaemonFlags/suspend``) instead".
    public var minCap: Int
    /// Cap while the user is idle (when ``minCap`` > 0).
    public var maxCap: Int
    public var flags: Int

    public static let minCapRange = 0...100
    public static let maxCapRange = 1...100

    public init(controlled: Bool = false, minCap: Int = 0, maxCap: Int = 100, flags: Int = 0) {
        self.controlled = controlled
        self.minCap = minCap
        self.maxCap = maxCap
        self.flags = flags
    }

    /// The flags as a set; unknown bits are dropped (``validate()`` refuses them).
    public var flagSet: DaemonFlags { DaemonFlags(rawValue: flags).intersection(.all) }

    /// Whether the controller owns the execution cap (a user's own cap would fight it).
    public var controlsCap: Bool { controlled && minCap > 0 }

    /// Refuses out-of-range caps and unknown flag bits, naming the field.
    public func validate() throws(VMSessionError) {
        guard Self.minCapRange.contains(minCap) else {
            throw VMSessionError(.invalidArgument, "'minCap' must be between 0 and 100 (0 pauses instead of capping); got \(minCap).")
        }
        guard Self.maxCapRange.contains(maxCap) else {
            throw VMSessionError(.invalidArgument, "'maxCap' must be between 1 and 100; got \(maxCap).")
        }
        guard minCap <= maxCap else {
            throw VMSessionError(.invalidArgument, "'minCap' (\(minCap)) must not be above 'maxCap' (\(maxCap)).")
        }
        guard flags & ~DaemonFlags.all.rawValue == 0, flags >= 0 else {
            throw VMSessionError(
                .invalidArgument, "'flags' may only combine 1 (DF_SUSPEND) and 2 (DF_AUTOSTART); got \(flags).")
        }
    }
}
