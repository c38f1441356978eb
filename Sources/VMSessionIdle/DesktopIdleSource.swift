import Dispatch
import Foundation
import Synchronization
import VMSessionCore

/// The idle source of the user's session, chosen by ``IdleSourceChoice`` from the daemon's environment
/// (or the configured preference) and re-chosen whenever the chosen one cannot answer: a display, bus
/// or compositor that appears after the daemon started is picked up on the next reading (the controller
/// reads at least every ``IdleDetector/unavailableRetry`` while none answers), and a session that changes
/// (its Wayland socket gone, an X server there) gets the source that fits it.
public final class DesktopIdleSource: IdleSource {
    /// Makes the concrete source for a choice; `onChange` is to be called on every announced event.
    public typealias Factory = @Sendable (IdleSourceKind, SessionEnvironment, _ onChange: @escaping @Sendable () -> Void) -> (any IdleSource)?

    public let preference: IdleSourceChoice.Preference
    public let changes: AsyncStream<Void>

    private struct Current {
        var choice: IdleSourceChoice
        var environment: SessionEnvironment
        var source: (any IdleSource)?
    }

    private let variables: [String: String]
    private let factory: Factory
    private let current: Mutex<Current>
    private let changed: AsyncStream<Void>.Continuation
    private let queue = DispatchQueue(label: "vmsessiond.idle-source-probe")

    /// `variables`: the session's environment (`WAYLAND_DISPLAY`, `DISPLAY`, `XDG_SESSION_TYPE`,
    /// `XDG_CURRENT_DESKTOP`, `DBUS_SESSION_BUS_ADDRESS`, `XDG_RUNTIME_DIR`), with the config's overrides applied.
    public init(variables: [String: String], preference: IdleSourceChoice.Preference, factory: @escaping Factory = DesktopIdleSource.standard) {
        self.variables = variables
        self.preference = preference
        self.factory = factory
        (changes, changed) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let environment = Self.probe(variables)
        let choice = IdleSourceChoice.choose(environment, preference: preference)
        current = Mutex(Current(choice: choice, environment: environment, source: nil))
        let source = choice.kind.flatMap { factory($0, environment, { [changed] in changed.yield() }) }
        current.withLock { $0.source = source }
    }

    deinit { changed.finish() }

    public var name: String { current.withLock { $0.source?.name ?? "none" } }
    public var kind: IdleSourceKind? { current.withLock { $0.choice.kind } }
    public var reason: String { current.withLock { $0.choice.reason } }
    public var announcesInput: Bool { current.withLock { $0.source?.announcesInput ?? false } }
    /// The X display read, while an X server is the source.
    public var display: String? {
        current.withLock { ($0.source as? X11IdleSource)?.display ?? ($0.source as? XScreenSaverIdleSource)?.display }
    }

    public func idleMilliseconds() async throws(VMSessionError) -> UInt64 {
        let source = current.withLock { $0.source }
        guard let source else {
            _ = await rechoose()
            throw VMSessionError(.unavailable, "No idle source: \(reason).")
        }
        do {
            return try await source.idleMilliseconds()
        } catch {
            // The session may have changed: choose again, and if another source fits now, ask it.
            guard let replacement = await rechoose() else { throw error }
            do { return try await replacement.idleMilliseconds() } catch {
                throw VMSessionError(.unavailable, "\(error.message) Chosen because \(reason).")
            }
        }
    }

    /// Looks at the session again; returns the new source if the choice changed.
    private func rechoose() async -> (any IdleSource)? {
        let variables = self.variables
        let environment = await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: Self.probe(variables)) }
        }
        let choice = IdleSourceChoice.choose(environment, preference: preference)
        let sameTarget = current.withLock { current -> Bool in
            let same = current.choice.kind == choice.kind && Self.target(of: choice.kind, in: current.environment) == Self.target(of: choice.kind, in: environment)
            current.environment = environment
            current.choice = choice
            return same
        }
        guard !sameTarget else { return nil }
        let changed = self.changed
        let source = choice.kind.flatMap { factory($0, environment, { changed.yield() }) }
        current.withLock { $0.source = source }
        return source
    }

    private static func target(of kind: IdleSourceKind?, in environment: SessionEnvironment) -> String? {
        switch kind {
        case .xscreensaver?: environment.display
        case .wayland?: environment.waylandSocketPath ?? environment.waylandDisplay
        case .mutter?: environment.sessionBus
        case .logind?, nil: nil
        }
    }

    /// The environment with whether its sockets exist now. Blocking (two `stat`s): called off the pool.
    public static func probe(_ variables: [String: String]) -> SessionEnvironment {
        var environment = SessionEnvironment(
            waylandDisplay: variables["WAYLAND_DISPLAY"], display: variables["DISPLAY"], sessionType: variables["XDG_SESSION_TYPE"],
            currentDesktop: variables["XDG_CURRENT_DESKTOP"], sessionBus: variables["DBUS_SESSION_BUS_ADDRESS"],
            runtimeDirectory: variables["XDG_RUNTIME_DIR"])
        environment.waylandSocketPresent = environment.waylandSocketPath.map { FileManager.default.fileExists(atPath: $0) } ?? false
        environment.xSocketPresent = environment.xSocketPath.map { FileManager.default.fileExists(atPath: $0) } ?? (environment.display != nil)
        return environment
    }

    /// The real sources. logind's system bus may be given as `VMSESSIOND_SYSTEM_BUS_ADDRESS` (or D-Bus's
    /// own `DBUS_SYSTEM_BUS_ADDRESS`, which sd-bus reads itself).
    public static let standard: Factory = standard(x11: .auto)

    /// The real sources, with `x11` saying whether an X server's XSync alarms may be used (`x11Idle`).
    public static func standard(x11: X11IdleMethod.Preference) -> Factory {
        { kind, environment, onChange in source(kind, environment, x11: x11, onChange: onChange) }
    }

    private static func source(
        _ kind: IdleSourceKind, _ environment: SessionEnvironment, x11: X11IdleMethod.Preference, onChange: @escaping @Sendable () -> Void
    ) -> (any IdleSource)? {
        switch kind {
        case .xscreensaver:
            return environment.display.map { X11IdleSource(display: $0, preference: x11, onChange: onChange) }
        case .wayland:
            return (environment.waylandSocketPath ?? environment.waylandDisplay).map { WaylandIdleSource(display: $0, onChange: onChange) }
        case .mutter:
            return environment.sessionBus.map { BusIdleSource(service: .mutter(sessionBus: $0)) }
        case .logind:
            return BusIdleSource(service: .logind(systemBus: nil))
        }
    }
}
