import CSystemdBus
import Dispatch
import Foundation
import Synchronization
import VMSessionCore

/// Idle time asked over D-Bus (libsystemd's sd-bus): GNOME's `org.gnome.Mutter.IdleMonitor.GetIdletime`
/// on the session bus (Mutter offers no idle protocol to Wayland clients), or systemd-logind's
/// `IdleHint` / `IdleSinceHintMonotonic` on the system bus, the last resort and the system service's way
/// to follow the people at the desktop (set by desktops that manage it: GNOME does, sway does not).
///
/// One connection is kept and asked on each reading; calls block, so they run on a serial queue of
/// their own. A failed call closes the connection and a new one is tried at most every ``reopenInterval``.
public final class BusIdleSource: IdleSource {
    public enum Service: Sendable, Equatable {
        /// Mutter's idle monitor on the session bus at this address.
        case mutter(sessionBus: String)
        /// logind on the system bus (nil: the default system bus; else this address).
        case logind(systemBus: String?)
    }

    public static let reopenInterval: Duration = .milliseconds(500)

    public let service: Service
    public var kind: IdleSourceKind? {
        switch service {
        case .mutter: .mutter
        case .logind: .logind
        }
    }
    public var name: String {
        switch service {
        case .mutter(let bus): "mutter \(bus)"
        case .logind(let bus): "logind \(bus ?? "system bus")"
        }
    }

    private struct Connection: @unchecked Sendable {
        var bus: OpaquePointer?
        var lastAttempt: ContinuousClock.Instant?
        var lastError: String?
    }

    private let connection = Mutex(Connection())
    private let queue = DispatchQueue(label: "vmsessiond.bus-idle")

    public init(service: Service) {
        self.service = service
    }

    deinit {
        connection.withLock { state in
            if let bus = state.bus { vms_bus_close(bus) }
            state.bus = nil
        }
    }

    public func idleMilliseconds() async throws(VMSessionError) -> UInt64 {
        let result: Result<UInt64, VMSessionError> = await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: self.query()) }
        }
        return try result.get()
    }

    /// One question on the kept connection, (re)opening it if needed. Runs on ``queue`` only.
    private func query() -> Result<UInt64, VMSessionError> {
        connection.withLock { state in
            let clock = ContinuousClock()
            var message = [CChar](repeating: 0, count: 512)
            func text() -> String { String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            if state.bus == nil {
                if let last = state.lastAttempt, clock.now < last + Self.reopenInterval {
                    return .failure(VMSessionError(.unavailable, "\(state.lastError ?? "no bus") (retrying every 0.5 s)."))
                }
                state.lastAttempt = clock.now
                let address: String? =
                    switch service {
                    case .mutter(let bus): bus
                    case .logind(let bus): bus
                    }
                state.bus = address.map { address in address.withCString { vms_bus_open($0, &message, message.count) } }
                    ?? vms_bus_open(nil, &message, message.count)
                guard state.bus != nil else {
                    state.lastError = text()
                    return .failure(VMSessionError(.unavailable, text() + "."))
                }
            }
            guard let bus = state.bus else { return .failure(VMSessionError(.internalError, "no bus")) }
            let reading: UInt64?
            switch service {
            case .mutter:
                var milliseconds: UInt64 = 0
                reading = vms_mutter_idletime(bus, &milliseconds, &message, message.count) == 0 ? milliseconds : nil
            case .logind:
                var hint: Int32 = 0
                var since: UInt64 = 0
                if vms_logind_idle(bus, &hint, &since, &message, message.count) == 0 {
                    var now = timespec()
                    clock_gettime(CLOCK_MONOTONIC, &now)
                    let nowMicroseconds = UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
                    reading = IdleNotifications<ContinuousClock.Instant>.logindMilliseconds(
                        idleHint: hint != 0, idleSinceMicroseconds: since, nowMicroseconds: nowMicroseconds)
                } else {
                    reading = nil
                }
            }
            guard let reading else {
                vms_bus_close(bus)
                state.bus = nil
                state.lastAttempt = clock.now
                state.lastError = text()
                return .failure(VMSessionError(.unavailable, text() + "."))
            }
            return .success(reading)
        }
    }
}
