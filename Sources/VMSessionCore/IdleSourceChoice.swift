/// Where the desktop's idle time can come from. Each kind is one way a desktop tells of its user's input.
public enum IdleSourceKind: String, Codable, Sendable, CaseIterable {
    /// The X server: its SYNC extension's `IDLETIME` alarms, else MIT-SCREEN-SAVER polled (see ``X11IdleMethod``);
    /// an X11 session (it sees only X clients' input on Wayland). The name is kept from the plugin's days.
    case xscreensaver
    /// A Wayland compositor's `ext-idle-notify-v1`, or the older `org_kde_kwin_idle` (sway, KDE).
    case wayland
    /// GNOME's compositor over the session bus: `org.gnome.Mutter.IdleMonitor.GetIdletime`.
    case mutter
    /// systemd-logind's `IdleHint` on the system bus: set only by desktops that manage it (GNOME does).
    case logind
}

/// What the daemon's environment says about the user's graphical session: the variables a session (or
/// `systemctl --user import-environment`) hands to the processes it starts, and whether the sockets they
/// name exist right now (a display that appears after the daemon started must be picked up).
public struct SessionEnvironment: Sendable, Equatable {
    public var waylandDisplay: String?
    public var display: String?
    public var sessionType: String?
    public var currentDesktop: String?
    public var sessionBus: String?
    public var runtimeDirectory: String?
    /// Whether the Wayland socket named by ``waylandDisplay`` exists.
    public var waylandSocketPresent: Bool
    /// Whether the X server named by ``display`` has its socket (always true for a display over TCP).
    public var xSocketPresent: Bool

    public init(
        waylandDisplay: String? = nil, display: String? = nil, sessionType: String? = nil, currentDesktop: String? = nil,
        sessionBus: String? = nil, runtimeDirectory: String? = nil, waylandSocketPresent: Bool = false, xSocketPresent: Bool = false
    ) {
        self.waylandDisplay = waylandDisplay.flatMap { $0.isEmpty ? nil : $0 }
        self.display = display.flatMap { $0.isEmpty ? nil : $0 }
        self.sessionType = sessionType.flatMap { $0.isEmpty ? nil : $0.lowercased() }
        self.currentDesktop = currentDesktop.flatMap { $0.isEmpty ? nil : $0 }
        self.sessionBus = sessionBus.flatMap { $0.isEmpty ? nil : $0 }
        self.runtimeDirectory = runtimeDirectory.flatMap { $0.isEmpty ? nil : $0 }
        self.waylandSocketPresent = waylandSocketPresent
        self.xSocketPresent = xSocketPresent
    }

    /// The Wayland socket's path: `WAYLAND_DISPLAY` if absolute, else under `XDG_RUNTIME_DIR`.
    public var waylandSocketPath: String? {
        guard let waylandDisplay else { return nil }
        if waylandDisplay.hasPrefix("/") { return waylandDisplay }
        return runtimeDirectory.map { $0 + "/" + waylandDisplay }
    }

    /// The X server's local socket for `:N` / `unix:N` (with an optional `.screen`); nil for TCP displays.
    public var xSocketPath: String? {
        guard let display, let colon = display.lastIndex(of: ":") else { return nil }
        let host = display[..<colon]
        guard host.isEmpty || host == "unix" else { return nil }
        let number = display[display.index(after: colon)...].prefix { $0 != "." }
        guard !number.isEmpty, number.allSatisfy(\.isNumber) else { return nil }
        return "/tmp/.X11-unix/X\(number)"
    }

    /// Whether the desktop is GNOME (`XDG_CURRENT_DESKTOP` is a colon-separated list, e.g. `ubuntu:GNOME`).
    public var isGNOME: Bool {
        (currentDesktop ?? "").split(separator: ":").contains { $0.caseInsensitiveCompare("GNOME") == .orderedSame }
    }
}

/// Which idle source to use and why: a pure decision from the session's environment and the configured
/// preference, re-made whenever the session may have changed (a socket appeared or went away).
public struct IdleSourceChoice: Sendable, Equatable {
    /// The preference in the config (`idleSource`): `auto` chooses from the environment.
    public enum Preference: String, Sendable, CaseIterable {
        case auto, xscreensaver, wayland, mutter, logind, none
    }

    /// nil: no source at all (`idleSource: none`).
    public var kind: IdleSourceKind?
    /// Why this one, in words a user can check against their session.
    public var reason: String

    public init(kind: IdleSourceKind?, reason: String) {
        self.kind = kind
        self.reason = reason
    }

    /// The choice. `auto` prefers, in order, a source whose endpoint is there now:
    /// - on a Wayland session under GNOME with a session bus: Mutter's idle monitor (Mutter offers no
    ///   idle-notify protocol to clients);
    /// - with `WAYLAND_DISPLAY`: the compositor's idle-notify protocol (on an X11 session, X comes first);
    /// - with `DISPLAY`: the X screen saver extension;
    /// and if none is there yet, the first one the environment names (it is waited for); with neither
    /// display variable, logind's idle hint on the system bus (the system service's case).
    public static func choose(_ environment: SessionEnvironment, preference: Preference = .auto) -> IdleSourceChoice {
        switch preference {
        case .none:
            return IdleSourceChoice(kind: nil, reason: "idle detection is off (idleSource: none)")
        case .xscreensaver, .wayland, .mutter, .logind:
            let kind = IdleSourceKind(rawValue: preference.rawValue) ?? .logind
            if let missing = missingRequirement(of: kind, in: environment) {
                return IdleSourceChoice(kind: kind, reason: "configured (idleSource: \(preference.rawValue)), but \(missing)")
            }
            return IdleSourceChoice(kind: kind, reason: "configured (idleSource: \(preference.rawValue))")
        case .auto:
            break
        }
        let candidates = self.candidates(environment)
        if let present = candidates.first(where: { $0.present }) {
            return IdleSourceChoice(kind: present.kind, reason: present.why)
        }
        if let first = candidates.first {
            return IdleSourceChoice(kind: first.kind, reason: first.why + "; waiting for it to appear")
        }
        return IdleSourceChoice(
            kind: .logind,
            reason: "no WAYLAND_DISPLAY or DISPLAY in the environment (a system service, or a session that did not "
                + "import its environment): logind's IdleHint on the system bus, set by desktops that manage it (GNOME does)")
    }

    private struct Candidate {
        let kind: IdleSourceKind
        let present: Bool
        let why: String
    }

    private static func candidates(_ environment: SessionEnvironment) -> [Candidate] {
        var wayland: [Candidate] = []
        if let waylandDisplay = environment.waylandDisplay {
            if environment.isGNOME, let bus = environment.sessionBus {
                wayland.append(Candidate(
                    kind: .mutter, present: environment.waylandSocketPresent,
                    why: "GNOME on Wayland (XDG_CURRENT_DESKTOP=\(environment.currentDesktop ?? "")): Mutter's idle monitor on the session bus \(bus)"))
            }
            let where_ = environment.waylandSocketPath ?? waylandDisplay
            wayland.append(Candidate(
                kind: .wayland, present: environment.waylandSocketPresent,
                why: "WAYLAND_DISPLAY=\(waylandDisplay): the compositor's idle-notify protocol at \(where_)"))
        }
        var x: [Candidate] = []
        if let display = environment.display {
            let onWayland = environment.sessionType == "wayland" || environment.waylandDisplay != nil
            x.append(Candidate(
                kind: .xscreensaver, present: environment.xSocketPath == nil || environment.xSocketPresent,
                why: "DISPLAY=\(display): the X screen saver extension"
                    + (onWayland ? " (on a Wayland session it sees only X clients' input)" : "")))
        }
        return environment.sessionType == "x11" ? x + wayland : wayland + x
    }

    private static func missingRequirement(of kind: IdleSourceKind, in environment: SessionEnvironment) -> String? {
        switch kind {
        case .xscreensaver: environment.display == nil ? "DISPLAY is not set (set 'display')" : nil
        case .wayland: environment.waylandDisplay == nil ? "WAYLAND_DISPLAY is not set (set 'waylandDisplay')" : nil
        case .mutter: environment.sessionBus == nil ? "DBUS_SESSION_BUS_ADDRESS is not set" : nil
        case .logind: nil
        }
    }
}
