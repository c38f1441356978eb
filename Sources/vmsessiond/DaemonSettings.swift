import Configuration
import Foundation
import VMSessionCore
import VMSessionDaemon
import VMSessionHypervisor

/// The daemon's settings, resolved from (highest first) command-line flags, `VMSESSIOND_*` environment
/// variables, the JSON config file, and the defaults below.
struct DaemonSettings: Sendable {
    var host: String
    var port: Int
    var stateDirectory: String
    var libvirtURI: String?
    var accelerator: Accelerator
    var applianceDirectory: String
    var stopGraceSeconds: Int
    /// Seconds the daemon gives its open connections (viewers, event streams, proxied bodies) and services to
    /// end after SIGTERM/SIGINT before it stops them and, failing that, exits anyway (`shutdownGrace`).
    var shutdownGraceSeconds: Int
    var logLevel: String
    /// The X display whose idle time drives the controller (`display`, else `$DISPLAY`); nil if none.
    var display: String?
    /// Which idle source to use (`idleSource`): `auto` chooses from the session's environment.
    var idleSource: IdleSourceChoice.Preference
    /// How an X server's idle time is read (`x11Idle`): `auto` uses XSync's alarms where the server has them.
    var x11Idle: X11IdleMethod.Preference = .auto
    /// The session's variables the idle source is chosen from, with `display` and `waylandDisplay` applied.
    var sessionVariables: [String: String]
    /// Seconds without input before the desktop counts as idle, until `PUT /api/v1/daemon` stores another.
    var idleTime: Int
    /// Open HTTP connections at most (lowered to fit the descriptor limit; see ``ConnectionBudget``).
    var maxConnections: Int
    /// Open event streams at most, across every client (lowered to fit the connection budget).
    var maxEventStreams: Int
    /// What is kept of events, operations, tokens and pending origins.
    var retention: RetentionPolicy
    /// Sessions and resources per origin and in all (`limits.*`).
    var quota: SessionQuota
    /// Web origins that may wait for the user's decision at once (`limits.pendingOrigins`).
    var maximumPendingOrigins: Int
    /// The serial console's history, per-client output bound and clients per console (`console.*`).
    var console: ConsoleMultiplexer.Limits
    /// How much of each console log stays on disk (`console.logBytes`); older output is freed.
    var consoleLog: ConsoleLogBound

    /// The names under `limits.` (config key `limits.NAME`, flag `--limit NAME=VALUE`).
    static let limitNames = [
        "sessions", "sessionsPerOrigin", "cpus", "memory", "disk", "cpusPerOrigin", "memoryPerOrigin", "diskPerOrigin", "pendingOrigins",
        "snapshotsPerSession", "snapshotsPerOrigin", "snapshotMiBPerSession", "snapshotMiBPerOrigin",
    ]
    /// How execution caps are applied: auto, libvirt, cgroup or none (see `CapMechanism`).
    var capMechanism: String
    /// A cgroup directory to make the VMs' cgroups in instead of the daemon's own; nil: the daemon's own.
    var cgroupDirectory: String?
    /// What guests may reach unless the admin chose otherwise for their origin (`guestEgress`).
    var guestEgress: EgressPolicy = .internet
    /// Where a second listener serves `GET /metrics` without a token (`metricsListen`); nil: none, and
    /// `/metrics` is read on the daemon's own listener with the admin token.
    ///
    /// Why a listener of its own rather than a list of scraper addresses allowed on the daemon's: that
    /// listener is loopback-only, so every local program, user and web page arrives from 127.0.0.1 and no
    /// address list could tell Prometheus apart. A listener that serves nothing else can be bound where the
    /// scraper is (the loopback, or a private interface for a remote Prometheus) and firewalled like any
    /// exporter's port.
    var metricsListen: (host: String, port: Int)? = nil
    /// Whether the hot read GETs are answered below Hummingbird's async layer (`readFastPath`: on or off; the
    /// answers are the same either way, see `ReadFastPath`).
    var readFastPath = true
    /// Whether event streams are served on the event loops (`eventsFastPath`: on or off; the streams are the same
    /// either way, see `EventStreamFastPath`).
    var eventsFastPath = true
    /// Remote libvirt hosts (`hosts`: `NAME URI [KEY=VALUE]... [maxSessions=N]` each), beside the local one.
    var hosts: [HostDefinition] = []

    static let defaultListen = "127.0.0.1:7011"
    /// Within the 60 s systemd's units allow a stop (`TimeoutStopSec`), with room to spare.
    static let defaultShutdownGrace = 10
    static let defaultConsoleLogBytes = 8 << 20
    static let systemConfigFile = "/etc/vmsessiond/config.json"

    /// The default config file: /etc/vmsessiond/config.json for root, `$XDG_CONFIG_HOME/vmsessiond/config.json`
    /// (or ~/.config/vmsessiond/config.json) for a user.
    static func defaultConfigFile(environment: [String: String]) -> String {
        if geteuid() == 0 { return systemConfigFile }
        if let xdg = environment["XDG_CONFIG_HOME"], !xdg.isEmpty { return xdg + "/vmsessiond/config.json" }
        return NSHomeDirectory() + "/.config/vmsessiond/config.json"
    }
    /// The variables that describe the user's graphical session (see ``IdleSourceChoice``).
    static let sessionVariableNames: Set<String> = [
        "WAYLAND_DISPLAY", "DISPLAY", "XDG_SESSION_TYPE", "XDG_CURRENT_DESKTOP", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR",
    ]

    /// The default state directory: `$STATE_DIRECTORY` under systemd, /var/lib/vmsessiond for root,
    /// `$XDG_STATE_HOME/vmsessiond` (or ~/.local/state/vmsessiond) otherwise.
    static func defaultStateDirectory(environment: [String: String]) -> String {
        if let systemd = environment["STATE_DIRECTORY"], !systemd.isEmpty {
            return String(systemd.split(separator: ":").first ?? Substring(systemd))
        }
        if geteuid() == 0 { return "/var/lib/vmsessiond" }
        if let xdg = environment["XDG_STATE_HOME"], !xdg.isEmpty { return xdg + "/vmsessiond" }
        return NSHomeDirectory() + "/.local/state/vmsessiond"
    }

    /// Reads the settings. `flags` holds the values given on the command line, by config key.
    /// `hostFlags` are the `--host` flags (the config's `hosts` when given).
    static func load(
        flags: [String: String], hostFlags: [String] = [], configFile: String?, environment: [String: String]
    ) async throws -> DaemonSettings {
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        for (key, value) in flags { values[AbsoluteConfigKey(key.split(separator: ".").map(String.init))] = .init(.string(value), isSecret: false) }
        if !hostFlags.isEmpty { values[AbsoluteConfigKey(["hosts"])] = .init(.stringArray(hostFlags), isSecret: false) }
        let explicitFile = configFile ?? environment["VMSESSIOND_CONFIG"]
        let file = try await FileProvider<JSONSnapshot>(
            filePath: .init(explicitFile ?? defaultConfigFile(environment: environment)), allowMissing: explicitFile == nil)
        let config = ConfigReader(providers: [
            InMemoryProvider(name: "flags", values: values),
            KeyMappingProvider(upstream: EnvironmentVariablesProvider(environmentVariables: environment)) { key in
                key.prepending(["vmsessiond"])
            },
            file,
        ])

        let listen = config.string(forKey: "listen", default: defaultListen)
        let (host, port) = try parseListen(listen)
        guard host == "127.0.0.1" || host == "::1" || host == "localhost" else {
            throw VMSessionError(.invalidArgument, "listen: vmsessiond only listens on the loopback (127.0.0.1 or ::1); got '\(host)'.")
        }
        let acceleratorText = config.string(forKey: "accelerator", default: Accelerator.auto.rawValue)
        guard let accelerator = Accelerator(rawValue: acceleratorText) else {
            throw VMSessionError(.invalidArgument, "accelerator must be auto, kvm or tcg; got '\(acceleratorText)'.")
        }
        let stateDirectory = config.string(forKey: "stateDir", default: defaultStateDirectory(environment: environment))
        let grace = config.string(forKey: "stopGrace", default: "30")
        guard let stopGrace = Int(grace), (0...3600).contains(stopGrace) else {
            throw VMSessionError(.invalidArgument, "stopGrace must be 0 to 3600 seconds; got '\(grace)'.")
        }
        let shutdownText = config.string(forKey: "shutdownGrace", default: "\(defaultShutdownGrace)")
        guard let shutdownGrace = Int(shutdownText), (1...300).contains(shutdownGrace) else {
            throw VMSessionError(.invalidArgument, "shutdownGrace must be 1 to 300 seconds; got '\(shutdownText)'.")
        }
        let uri = config.string(forKey: "libvirtUri")
        let idleText = config.string(forKey: "idleTime", default: "30")
        guard let idleTime = Int(idleText), (1...86400).contains(idleTime) else {
            throw VMSessionError(.invalidArgument, "idleTime must be 1 to 86400 seconds; got '\(idleText)'.")
        }
        let display = config.string(forKey: "display") ?? environment["DISPLAY"]
        let maxConnections = try boundedInt(config, "maxConnections", default: 4096, in: 16...1_000_000)
        let maxEventStreams = try boundedInt(config, "maxEventStreams", default: 2048, in: 1...1_000_000)
        let kept = RetentionPolicy.default
        let retention = RetentionPolicy(
            eventsPerSession: try boundedInt(config, "eventsPerSession", default: kept.eventsPerSession, in: RetentionPolicy.countRange),
            eventDays: try boundedInt(config, "eventRetentionDays", default: kept.eventDays, in: RetentionPolicy.dayRange),
            operationDays: try boundedInt(config, "operationRetentionDays", default: kept.operationDays, in: RetentionPolicy.dayRange),
            tokensPerSession: try boundedInt(config, "tokensPerSession", default: kept.tokensPerSession, in: RetentionPolicy.countRange),
            pendingOriginDays: try boundedInt(
                config, "pendingOriginRetentionDays", default: kept.pendingOriginDays, in: RetentionPolicy.dayRange),
            closedSessionDays: try boundedInt(
                config, "closedSessionRetentionDays", default: kept.closedSessionDays, in: RetentionPolicy.dayRange))
        func limit(_ name: String, _ fallback: Int) throws(VMSessionError) -> Int {
            let text = config.string(forKey: ConfigKey(["limits", name]), default: "\(fallback)")
            guard let value = Int(text), (1...(1 << 40)).contains(value) else {
                throw VMSessionError(.invalidArgument, "limits.\(name) must be a whole number from 1; got '\(text)'.")
            }
            return value
        }
        let defaults = SessionQuota.defaults
        let quota = SessionQuota(
            sessions: try limit("sessions", defaults.sessions),
            sessionsPerClient: try limit("sessionsPerOrigin", defaults.sessionsPerClient),
            resources: .init(
                cpus: try limit("cpus", defaults.resources.cpus), memory: try limit("memory", defaults.resources.memory),
                disk: try limit("disk", defaults.resources.disk)),
            resourcesPerClient: .init(
                cpus: try limit("cpusPerOrigin", defaults.resourcesPerClient.cpus),
                memory: try limit("memoryPerOrigin", defaults.resourcesPerClient.memory),
                disk: try limit("diskPerOrigin", defaults.resourcesPerClient.disk)),
            snapshots: .init(
                perSession: try limit("snapshotsPerSession", defaults.snapshots.perSession),
                perClient: try limit("snapshotsPerOrigin", defaults.snapshots.perClient),
                mebibytesPerSession: try limit("snapshotMiBPerSession", defaults.snapshots.mebibytesPerSession),
                mebibytesPerClient: try limit("snapshotMiBPerOrigin", defaults.snapshots.mebibytesPerClient)))
        let consoleDefaults = ConsoleMultiplexer.Limits.defaults
        func consoleSetting(_ name: String, _ fallback: Int, _ range: ClosedRange<Int>) throws(VMSessionError) -> Int {
            let text = config.string(forKey: ConfigKey(["console", name]), default: "\(fallback)")
            guard let value = Int(text), range.contains(value) else {
                throw VMSessionError(
                    .invalidArgument, "console.\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound); got '\(text)'.")
            }
            return value
        }
        let console = ConsoleMultiplexer.Limits(
            historyBytes: try consoleSetting("historyBytes", consoleDefaults.historyBytes, 1024...(64 << 20)),
            viewerBufferBytes: try consoleSetting("viewerBufferBytes", consoleDefaults.viewerBufferBytes, 4096...(256 << 20)),
            viewers: try consoleSetting("viewers", consoleDefaults.viewers, 1...4096),
            inputBurst: consoleDefaults.inputBurst, inputBytesPerSecond: consoleDefaults.inputBytesPerSecond)
        let logBytes = try consoleSetting("logBytes", max(Self.defaultConsoleLogBytes, console.historyBytes), (64 << 10)...(1 << 40))
        guard logBytes >= console.historyBytes else {
            throw VMSessionError(
                .invalidArgument,
                "console.logBytes (\(logBytes)) must be at least console.historyBytes (\(console.historyBytes)): the history is read from the log.")
        }
        let capMechanism = config.string(forKey: "capMechanism", default: "auto")
        guard ["auto", "libvirt", "cgroup", "none"].contains(capMechanism) else {
            throw VMSessionError(.invalidArgument, "capMechanism must be auto, libvirt, cgroup or none; got '\(capMechanism)'.")
        }
        let cgroupDirectory = config.string(forKey: "cgroupDir")
        let guestEgress = try EgressPolicy.parse(config.string(forKey: "guestEgress", default: EgressPolicy.internet.rawValue))
        var metricsListen: (host: String, port: Int)?
        if let text = config.string(forKey: "metricsListen"), !text.isEmpty, text != "none" {
            do throws(VMSessionError) {
                metricsListen = try parseListen(text)
            } catch {
                throw VMSessionError(.invalidArgument, "metricsListen must be ADDRESS:PORT (e.g. 127.0.0.1:9711) or none; got '\(text)'.")
            }
        }
        let sourceText = config.string(forKey: "idleSource", default: "auto")
        guard let idleSource = IdleSourceChoice.Preference(rawValue: sourceText) else {
            let names = IdleSourceChoice.Preference.allCases.map(\.rawValue).joined(separator: ", ")
            throw VMSessionError(.invalidArgument, "idleSource must be one of \(names); got '\(sourceText)'.")
        }
        let x11Text = config.string(forKey: "x11Idle", default: "auto")
        guard let x11Idle = X11IdleMethod.Preference(rawValue: x11Text) else {
            throw VMSessionError(.invalidArgument, "x11Idle must be auto or poll; got '\(x11Text)'.")
        }
        let fastPathText = config.string(forKey: "readFastPath", default: "on")
        guard ["on", "off"].contains(fastPathText) else {
            throw VMSessionError(.invalidArgument, "readFastPath must be on or off; got '\(fastPathText)'.")
        }
        let eventsFastPathText = config.string(forKey: "eventsFastPath", default: "on")
        guard ["on", "off"].contains(eventsFastPathText) else {
            throw VMSessionError(.invalidArgument, "eventsFastPath must be on or off; got '\(eventsFastPathText)'.")
        }
        var sessionVariables = environment.filter { sessionVariableNames.contains($0.key) }
        sessionVariables["DISPLAY"] = display
        if let wayland = config.string(forKey: "waylandDisplay") { sessionVariables["WAYLAND_DISPLAY"] = wayland }
        return DaemonSettings(
            host: host, port: port, stateDirectory: absolute(stateDirectory), libvirtURI: uri?.isEmpty == true ? nil : uri,
            accelerator: accelerator,
            applianceDirectory: absolute(
                config.string(
                    forKey: "applianceDir",
                    default: InstalledLayout.defaultApplianceDirectory(stateDirectory: absolute(stateDirectory), executable: InstalledLayout.executable))),
            stopGraceSeconds: stopGrace, shutdownGraceSeconds: shutdownGrace,
            logLevel: config.string(forKey: "logLevel", default: "info"),
            display: display?.isEmpty == true ? nil : display, idleSource: idleSource, x11Idle: x11Idle, sessionVariables: sessionVariables,
            idleTime: idleTime,
            maxConnections: maxConnections, maxEventStreams: maxEventStreams, retention: retention, quota: quota,
            maximumPendingOrigins: try limit("pendingOrigins", 64), console: console,
            consoleLog: ConsoleLogBound(keepBytes: UInt64(logBytes)), capMechanism: capMechanism,
            cgroupDirectory: cgroupDirectory?.isEmpty == false ? cgroupDirectory.map(absolute) : nil, guestEgress: guestEgress,
            metricsListen: metricsListen, readFastPath: fastPathText == "on", eventsFastPath: eventsFastPathText == "on",
            hosts: try (config.stringArray(forKey: "hosts") ?? []).map { spec throws(VMSessionError) in
                do throws(VMSessionError) {
                    return try HostDefinition.parse(spec: spec)
                } catch {
                    throw VMSessionError(.invalidArgument, "hosts: \(error.message)")
                }
            })
    }

    private static func boundedInt(_ config: ConfigReader, _ key: String, default value: Int, in range: ClosedRange<Int>) throws(VMSessionError) -> Int {
        let text = config.string(forKey: ConfigKey(key), default: String(value))
        guard let number = Int(text), range.contains(number) else {
            throw VMSessionError(.invalidArgument, "\(key) must be a whole number from \(range.lowerBound) to \(range.upperBound); got '\(text)'.")
        }
        return number
    }

    static func parseListen(_ text: String) throws(VMSessionError) -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw VMSessionError(.invalidArgument, "listen must be ADDRESS:PORT (e.g. 127.0.0.1:7011); got '\(text)'.")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    private static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}
