import CXScreenSaver
import Dispatch
import Synchronization
import VMSessionCore

/// Idle time from the X server's MIT-SCREEN-SAVER extension (`XScreenSaverQueryInfo`).
///
/// Unlike the plugin, which reopened the display every second, it keeps one connection open and asks
/// over it (one round trip to a local server). If the X server goes away the query fails, the
/// connection is closed, and a new one is tried on a later query, at most every ``reopenInterval`` (so a
/// display that comes up after the daemon is picked up within a second).
/// Xlib calls block, so they run on a serial queue of their own, never on the cooperative pool.
public final class XScreenSaverIdleSource: IdleSource {
    /// The least time between two attempts to open the display after a failure.
    public static let reopenInterval: Duration = .milliseconds(500)

    public let display: String
    public var name: String { "xscreensaver \(display)" }
    public var kind: IdleSourceKind? { .xscreensaver }

    private struct Connection: @unchecked Sendable {
        var pointer: OpaquePointer?
        var lastAttempt: ContinuousClock.Instant?
    }

    private let connection = Mutex(Connection())
    private let queue = DispatchQueue(label: "vmsessiond.xscreensaver")

    public init(display: String) {
        self.display = display
    }

    deinit {
        connection.withLock { state in
            if let pointer = state.pointer { vms_xss_close(pointer) }
            state.pointer = nil
        }
    }

    public func idleMilliseconds() async throws(VMSessionError) -> UInt64 {
        let result: Result<UInt64, VMSessionError> = await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: self.query()) }
        }
        return try result.get()
    }

    /// One query on the kept connection, (re)opening it if needed. Runs on ``queue`` only.
    private func query() -> Result<UInt64, VMSessionError> {
        connection.withLock { state in
            let clock = ContinuousClock()
            if state.pointer == nil {
                if let last = state.lastAttempt, clock.now < last + Self.reopenInterval {
                    return .failure(VMSessionError(.unavailable, "The X display \(display) cannot be opened (retrying every 0.5 s)."))
                }
                state.lastAttempt = clock.now
                state.pointer = display.withCString { vms_xss_open($0) }
                guard state.pointer != nil else {
                    return .failure(VMSessionError(
                        .unavailable, "The X display \(display) cannot be opened, or has no MIT-SCREEN-SAVER extension."))
                }
            }
            guard let pointer = state.pointer else { return .failure(VMSessionError(.internalError, "no display")) }
            var idle: UInt = 0
            guard vms_xss_idle(pointer, &idle) == 0 else {
                vms_xss_close(pointer)
                state.pointer = nil
                state.lastAttempt = clock.now
                return .failure(VMSessionError(.unavailable, "The X display \(display) went away."))
            }
            return .success(UInt64(idle))
        }
    }
}
