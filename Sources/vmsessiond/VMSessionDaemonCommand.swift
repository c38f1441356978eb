import ArgumentParser
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import VMSessionAPI
import VMSessionCore
import VMSessionDaemon
import VMSessionHypervisor
import VMSessionStore

/// `vmsessiond`: reads its settings, opens the store and the hypervisor, and serves the API until SIGTERM.
@main
struct VMSessionDaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmsessiond",
        abstract: "Runs virtual machines as password-keyed sessions for web pages, over a local REST + SSE API.",
        discussion: """
            Every setting can come from a flag, an environment variable or the JSON config file (in that order of
            precedence). Config file keys and variables:
              listen        VMSESSIOND_LISTEN         default 127.0.0.1:7011
              stateDir      VMSESSIOND_STATE_DIR      default /var/lib/vmsessiond (root), $XDG_STATE_HOME/vmsessiond
              libvirtUri    VMSESSIOND_LIBVIRT_URI    default qemu:///embed?root=<stateDir>/libvirt
              accelerator   VMSESSIOND_ACCELERATOR    default auto (kvm if /dev/kvm is usable, else tcg)
              applianceDir  VMSESSIOND_APPLIANCE_DIR  default the one installed with the binary
                                                      (<prefix>/share/vmsessiond/appliance), else <stateDir>/appliance
              stopGrace     VMSESSIOND_STOP_GRACE     default 30 (seconds)
              shutdownGrace VMSESSIOND_SHUTDOWN_GRACE default 10 (seconds, 1-300: after SIGTERM, open connections
                                                      end; past it the daemon exits anyway; VMs keep running)
              logLevel      VMSESSIOND_LOG_LEVEL      default info
              display       VMSESSIOND_DISPLAY        default $DISPLAY (X display for idle detection; none: VMs at max)
              idleSource    VMSESSIOND_IDLE_SOURCE    default auto (from WAYLAND_DISPLAY, DISPLAY, XDG_*; or xscreensaver,
                                                      wayland, mutter, logind, none)
              waylandDisplay VMSESSIOND_WAYLAND_DISPLAY default $WAYLAND_DISPLAY (name under XDG_RUNTIME_DIR, or a path)
              x11Idle       VMSESSIOND_X11_IDLE       default auto (XSync IDLETIME alarms, else XScreenSaver polled; or poll)
              idleTime      VMSESSIOND_IDLE_TIME      default 30 (seconds without input before idle; PUT /api/v1/daemon wins)
              maxConnections   VMSESSIOND_MAX_CONNECTIONS    default 4096 (lowered to fit the descriptor limit)
              maxEventStreams  VMSESSIOND_MAX_EVENT_STREAMS  default 2048 (all clients; at most maxConnections - 32)
              eventsPerSession, eventRetentionDays, operationRetentionDays, tokensPerSession,
              pendingOriginRetentionDays, closedSessionRetentionDays: retention (defaults 10000, 90, 30, 64, 30,
              30; see the README)
              limits.sessions, limits.sessionsPerOrigin    default 64, 16 (sessions, closed ones included)
              limits.cpus, limits.memory, limits.disk    default 64, 65536, 1048576 (open sessions in all; MiB)
              limits.cpusPerOrigin, limits.memoryPerOrigin, limits.diskPerOrigin   default 16, 32768, 262144
              limits.pendingOrigins                      default 64 (web origins waiting for approval)
              limits.snapshotsPerSession, limits.snapshotsPerOrigin      default 8, 32
              limits.snapshotMiBPerSession, limits.snapshotMiBPerOrigin  default 16384, 65536 (MiB of snapshots)
                (variables VMSESSIOND_LIMITS_SESSIONS, …; flag --limit NAME=VALUE, e.g. --limit cpus=8)
              console.historyBytes        default 262144 (serial output replayed to each new console client)
              console.viewerBufferBytes   default 1048576 (output waiting for one client before it is dropped)
              console.viewers             default 64 (clients of one console at once)
              console.logBytes            default 8388608 (newest serial output kept on disk; older is freed)
                (variables VMSESSIOND_CONSOLE_HISTORY_BYTES, …)
              capMechanism  VMSESSIOND_CAP_MECHANISM  default auto (libvirt if privileged, else a cgroup; or libvirt, cgroup, none)
              cgroupDir     VMSESSIOND_CGROUP_DIR     default the daemon's own cgroup (v2 with cpu delegated, or v1 cpu)
              guestEgress   VMSESSIOND_GUEST_EGRESS   default internet (none: no network; open: the host's loopback too)
              metricsListen VMSESSIOND_METRICS_LISTEN default none (ADDRESS:PORT of a second listener that serves only
                                                      GET /metrics, without a token; the daemon's own needs the admin token)
              readFastPath  VMSESSIOND_READ_FAST_PATH default on (GET of a session, the list, an operation, /api/v1
                                                      answered below Hummingbird's async layer; off: by the router)
              eventsFastPath VMSESSIOND_EVENTS_FAST_PATH default on (event streams written on the event loops, one
                                                      hop per loop per batch of events; off: by the router)
              hosts         VMSESSIOND_HOSTS          default none (remote libvirt hosts beside the local one, each
                                                      "NAME URI [KEY=VALUE]... [maxSessions=N]"; a JSON array of
                                                      strings, or comma-separated in the variable; flag --host)
            The config file is --config, else $VMSESSIOND_CONFIG, else /etc/vmsessiond/config.json (root) or
            $XDG_CONFIG_HOME/vmsessiond/config.json (a user), if it exists.
            """,
        // `vmsessiond --version`; the one place the version is written (`make deb` names the package after it).
        version: VMSessionAPI.version)

    @Option(help: "Address and port to listen on; loopback only.")
    var listen: String?

    @Option(name: .customLong("state-dir"), help: "Directory for the database, VM disks and libvirt's embedded root.")
    var stateDir: String?

    @Option(name: .customLong("libvirt-uri"), help: "libvirt URI (e.g. test:///default, qemu:///system); default: embedded QEMU driver.")
    var libvirtURI: String?

    @Option(help: "Guest accelerator: auto, kvm or tcg.")
    var accelerator: String?

    @Option(name: .customLong("appliance-dir"), help: "Directory holding the built test appliance (vmlinuz, initrd.img, cmdline).")
    var applianceDir: String?

    @Option(name: .customLong("stop-grace"), help: "Seconds a guest gets to power off on 'stop' before it is powered off hard.")
    var stopGrace: String?

    @Option(name: .customLong("shutdown-grace"), help: "Seconds (1-300) the daemon takes at most to stop on SIGTERM; VMs keep running.")
    var shutdownGrace: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String?

    @Option(help: "X display whose idle time drives the idle-aware controller (default: $DISPLAY).")
    var display: String?

    @Option(name: .customLong("idle-source"), help: "Idle source: auto, xscreensaver, wayland, mutter, logind or none.")
    var idleSource: String?

    @Option(name: .customLong("wayland-display"), help: "Wayland display for idle detection (default: $WAYLAND_DISPLAY).")
    var waylandDisplay: String?

    @Option(name: .customLong("x11-idle"), help: "X11 idle: auto (XSync IDLETIME alarms where the server has them) or poll (XScreenSaver).")
    var x11Idle: String?

    @Option(name: .customLong("idle-time"), help: "Seconds without input before the desktop counts as idle (1-86400).")
    var idleTime: String?

    @Option(help: "A quota, as NAME=VALUE (sessions, sessionsPerOrigin, cpus, memory, disk, cpusPerOrigin, memoryPerOrigin, diskPerOrigin, pendingOrigins, snapshotsPerSession, snapshotsPerOrigin, snapshotMiBPerSession, snapshotMiBPerOrigin); repeatable.")
    var limit: [String] = []

    @Option(name: .customLong("cap-mechanism"), help: "How execution caps are applied: auto, libvirt, cgroup or none.")
    var capMechanism: String?

    @Option(name: .customLong("cgroup-dir"), help: "A writable cgroup (v1 cpu, or v2 with cpu delegated) for the VMs' cgroups.")
    var cgroupDir: String?

    @Option(name: .customLong("guest-egress"), help: "What guests may reach: none, internet (default) or open (the host's loopback too).")
    var guestEgress: String?

    @Option(name: .customLong("metrics-listen"), help: "ADDRESS:PORT of a listener that serves only GET /metrics, without a token (default: none).")
    var metricsListen: String?

    @Option(name: .customLong("read-fast-path"), help: "on (default) or off: answer the hot read GETs below Hummingbird's async layer.")
    var readFastPath: String?

    @Option(name: .customLong("events-fast-path"), help: "on (default) or off: serve event streams on the event loops.")
    var eventsFastPath: String?

    @Option(name: .customLong("host"), help: "A remote libvirt host, as 'NAME URI [KEY=VALUE]... [maxSessions=N]'; repeatable.")
    var host: [String] = []

    @Option(help: "JSON config file.")
    var config: String?

    func run() async throws {
        MallocPolicy.apply()
        let onEventLoops = EventLoopExecutor.install()
        let environment = ProcessInfo.processInfo.environment
        var flags: [String: String] = [:]
        flags["listen"] = listen
        flags["stateDir"] = stateDir
        flags["libvirtUri"] = libvirtURI
        flags["accelerator"] = accelerator
        flags["applianceDir"] = applianceDir
        flags["stopGrace"] = stopGrace
        flags["shutdownGrace"] = shutdownGrace
        flags["logLevel"] = logLevel
        flags["display"] = display
        flags["idleTime"] = idleTime
        for item in limit {
            guard let equals = item.firstIndex(of: "="), DaemonSettings.limitNames.contains(String(item[..<equals])) else {
                throw ValidationError(
                    "--limit takes NAME=VALUE with NAME one of \(DaemonSettings.limitNames.joined(separator: ", ")); got '\(item)'.")
            }
            flags["limits." + item[..<equals]] = String(item[item.index(after: equals)...])
        }
        flags["capMechanism"] = capMechanism
        flags["cgroupDir"] = cgroupDir
        flags["guestEgress"] = guestEgress
        flags["metricsListen"] = metricsListen
        flags["idleSource"] = idleSource
        flags["waylandDisplay"] = waylandDisplay
        flags["x11Idle"] = x11Idle
        flags["readFastPath"] = readFastPath
        flags["eventsFastPath"] = eventsFastPath
        let settings: DaemonSettings
        do {
            settings = try await DaemonSettings.load(flags: flags, hostFlags: host, configFile: config, environment: environment)
        } catch let error as VMSessionError {
            throw ValidationError(error.message)
        }
        let level = Logger.Level(rawValue: settings.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "vmsessiond")
        logger.debug("Swift Concurrency's global jobs", metadata: ["runOn": "\(onEventLoops ? "NIO's event loops" : "Swift's own pool")"])
        try await Daemon(settings: settings, logger: logger).run()
    }
}
