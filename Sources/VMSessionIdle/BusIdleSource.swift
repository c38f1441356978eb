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
/// One connection is kept and asked on each reading (see ``KeptConnection``: blocking calls on a queue of
/// their own, a failed call closes the connection, a new one is tried at most every 0.5 s).
public final class BusIdleSource: IdleSource {
    public enum Service: Sendable, Equatable {
        /// Mutter's idle monitor on the session bus at this address.
        case mutter(sessionBus: String)
        /// logind on the system bus (nil: the default system bus; else this address).
        case logind(systemBus: String?)
    }

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

    private let connection: KeptConnection<OpaquePointer>

    public init(service: Service) {
        self.service = service
        let address: String? =
            switch service {
            case .mutter(let bus): bus
            case .logind(let bus): bus
            }
        connection = KeptConnection(
            label: "vmsessiond.bus-idle",
            open: {
                var message = [CChar](repeating: 0, count: 512)
                let bus = address.map { address in address.withCString { vms_bus_open($0, &message, message.count) } }
                    ?? vms_bus_open(nil, &message, message.count)
                guard let bus else { return .failure(.init(Self.text(message))) }
                return .success(bus)
            },
            close: { vms_bus_close($0) })
    }

    public func idleMilliseconds() async throws(VMSessionError) -> UInt64 {
        let service = self.service
        return try await connection.reading { bus in
            var message = [CChar](repeating: 0, count: 512)
            switch service {
            case .mutter:
                var milliseconds: UInt64 = 0
                guard vms_mutter_idletime(bus, &milliseconds, &message, message.count) == 0 else { return .failure(.init(Self.text(message))) }
                return .success(milliseconds)
            case .logind:
                var hint: Int32 = 0
                var since: UInt64 = 0
                guard vms_logind_idle(bus, &hint, &since, &message, message.count) == 0 else { return .failure(.init(Self.text(message))) }
                var now = timespec()
                clock_gettime(CLOCK_MONOTONIC, &now)
                let nowMicroseconds = UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
                return .success(
                    IdleNotifications<ContinuousClock.Instant>.logindMilliseconds(
                        idleHint: hint != 0, idleSinceMicroseconds: since, nowMicroseconds: nowMicroseconds))
            }
        }
    }

    /// sd-bus's error message, as the C shim wrote it into `message`.
    private static func text(_ message: [CChar]) -> String {
        String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
