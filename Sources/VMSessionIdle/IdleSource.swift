import VMSessionCore

/// Where the desktop's idle time comes from. The controller only needs "milliseconds since the last
/// input"; each desktop has its own way to tell it (X's screen saver extension, a Wayland compositor's
/// idle notifications, Mutter's idle monitor, logind's idle hint), and tests put a fake here for logic.
///
/// Sources that answer a question (XScreenSaver, Mutter, logind) are polled by their owner. Sources that
/// are told of changes (a Wayland compositor's `idled`/`resumed`, an X server's XSync alarms) say so with
/// ``announcesInput`` and yield on ``changes`` when an event came, so the owner reads at once instead of
/// polling while idle.
public protocol IdleSource: Sendable {
    /// What the source is, for `GET /api/v1/daemon` (e.g. `xsync IDLETIME :0`).
    var name: String { get }
    /// Which kind of source answers now (nil: none does).
    var kind: IdleSourceKind? { get }
    /// Why this source was chosen, for the API and the log.
    var reason: String { get }
    /// Whether input is announced on ``changes`` as it happens (then polling while idle is not needed).
    var announcesInput: Bool { get }
    /// Yields whenever an event may have changed the reading. One stream per source, for its one owner.
    var changes: AsyncStream<Void> { get }
    /// Milliseconds since the user last touched the keyboard or mouse. Throws `unavailable` (with a
    /// message saying why) when the source cannot tell right now.
    func idleMilliseconds() async throws(VMSessionError) -> UInt64
}

extension IdleSource {
    public var kind: IdleSourceKind? { .xscreensaver }
    public var reason: String { "given" }
    public var announcesInput: Bool { false }
    public var changes: AsyncStream<Void> { AsyncStream { $0.finish() } }
}
