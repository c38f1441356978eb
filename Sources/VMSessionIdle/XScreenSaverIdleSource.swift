import CXScreenSaver
import VMSessionCore

/// Idle time from the X server's MIT-SCREEN-SAVER extension (`XScreenSaverQueryInfo`).
///
/// Unlike the plugin, which reopened the display every second, it keeps one connection open and asks
/// over it (one round trip to a local server); see ``KeptConnection`` for how a display that goes away or
/// comes up later is handled, and why Xlib's blocking calls never run on the cooperative pool.
public final class XScreenSaverIdleSource: IdleSource {
    public let display: String
    public var name: String { "xscreensaver \(display)" }
    public var kind: IdleSourceKind? { .xscreensaver }

    private let connection: KeptConnection<OpaquePointer>

    public init(display: String) {
        self.display = display
        connection = KeptConnection(
            label: "vmsessiond.xscreensaver",
            open: {
                guard let pointer = display.withCString({ vms_xss_open($0) }) else {
                    return .failure(.init("The X display \(display) cannot be opened, or has no MIT-SCREEN-SAVER extension"))
                }
                return .success(pointer)
            },
            close: { vms_xss_close($0) })
    }

    public func idleMilliseconds() async throws(VMSessionError) -> UInt64 {
        let display = self.display
        return try await connection.reading { pointer in
            var idle: UInt = 0
            guard vms_xss_idle(pointer, &idle) == 0 else { return .failure(.init("The X display \(display) went away")) }
            return .success(UInt64(idle))
        }
    }
}
