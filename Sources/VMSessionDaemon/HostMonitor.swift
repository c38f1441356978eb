import Foundation
import Logging
import ServiceLifecycle
import VMSessionCore
import VMSessionHypervisor

/// Keeps one libvirt connection per remote host (issue 22), the daemon's long-running side of the
/// ``HostRegistry``: it opens each host's connection with keepalive, notices its loss (libvirt's close
/// callback: at once for a host whose libvirtd or sshd went away, after the keepalive interval of silence
/// for one that stopped answering; a failed probe otherwise), reconnects after the ``HostLink`` backoff, and
/// measures each host's capacity and latency every ``Settings/probeInterval``. It also reads the local host's
/// capacity. It decides nothing itself: the registry's ``HostLink`` says what to do after each event.
///
/// One child task per followed host, in this service's task group; a host removed from the registry is let go
/// at its next probe (its connection closed), and graceful shutdown ends them all.
public struct HostMonitor: Service {
    public struct Settings: Sendable {
        /// How often a connected remote host is probed (capacity and latency).
        public var probeInterval: Duration = .seconds(2)
        /// How often the local host's capacity is read again. Its CPUs and memory do not change, and its free
        /// memory only orders placement: an idle desktop daemon should not wake every 2 s for it (it did, and
        /// the idle bench showed the daemon's CPU while idle double).
        public var localProbeInterval: Duration = .seconds(60)
        /// How long opening a connection may take before the attempt counts as failed.
        public var connectTimeout: Duration = .seconds(10)
        /// libvirt keepalive: the connection is closed after this many seconds in which the host sent nothing.
        /// More than a host libvirtd's own keepalive probes' interval (5 s by default), which keep a live host from
        /// falling silent during a long call: a stalled host is noticed within 8 to 9 s.
        public var keepAliveInterval: Int32 = 8
        /// …after this many probes of libvirt's own went unanswered: 0, none, since on libvirt 9.0 a probe sent
        /// during a call can crash the daemon (CVE-2024-4418: see ``HostConnection``).
        public var keepAliveCount: UInt32 = 0

        public init() {}
    }

    let registry: HostRegistry
    /// Where each connected host's hypervisor is handed over (and taken back on loss); nil: hosts are only followed.
    let runtimes: HostRuntimes?
    let settings: Settings
    let localCapacity: @Sendable () -> HostCapacity?
    let clock: any Clock<Duration>
    let logger: Logger

    public init(
        registry: HostRegistry, runtimes: HostRuntimes? = nil, settings: Settings = .init(), localCapacity: @escaping @Sendable () -> HostCapacity? = LocalHostCapacity.read,
        clock: any Clock<Duration> = ContinuousClock(), logger: Logger
    ) {
        self.registry = registry
        self.runtimes = runtimes
        self.settings = settings
        self.localCapacity = localCapacity
        self.clock = clock
        self.logger = logger
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await followLocal() }
            for await host in registry.remoteHosts.cancelOnGracefulShutdown() {
                group.addTask { await follow(host) }
            }
            group.cancelAll()
        }
    }

    /// Reads the local host's capacity now and every local probe interval.
    func followLocal() async {
        while !Task.isCancelled {
            let capacity = await offPool { localCapacity() }
            registry.measured(HostDefinition.localName, capacity: capacity, latency: nil)
            do { try await clock.sleep(for: settings.localProbeInterval) } catch { return }
        }
    }

    /// Connects to `host`, watches the connection, and reconnects after each loss, until the host is removed
    /// or the service ends.
    func follow(_ host: HostRegistry.RemoteHost) async {
        defer {
            // Removed by the admin (it held no sessions): its runtime goes with it.
            if (try? registry.host(named: host.name)) == nil { runtimes?.removeHost(host.name) }
        }
        while registry.isCurrent(host), !Task.isCancelled {
            let action: HostLink.Action?
            do throws(VMSessionError) {
                let connection = try await HostConnection.open(
                    uri: host.uri, timeout: settings.connectTimeout, keepAliveInterval: settings.keepAliveInterval,
                    keepAliveCount: settings.keepAliveCount, clock: clock)
                guard registry.isCurrent(host), !Task.isCancelled else { return }
                let first = try await connection.probe()
                registry.measured(host.name, generation: host.generation, capacity: first.capacity, latency: first.latency)
                // The runtime first: a host counts as connected (placement sends sessions there) once calls can reach it.
                if let runtimes {
                    do throws(VMSessionError) {
                        try await runtimes.connect(try registry.host(named: host.name).definition, connection: connection)
                    } catch where error.code == .notSupported {
                        // No hypervisor for this host's transport: it is followed, and takes no sessions.
                        logger.notice("host followed without sessions", metadata: ["host": "\(host.name)", "why": "\(error.message)"])
                    }
                }
                _ = registry.report(host, .connected(at: Date()))
                guard let reason = await watch(connection, host) else { return }
                let time = Date()
                await runtimes?.lost(host.name, at: time, reason: reason)
                action = registry.report(host, .lost(at: time, reason: reason))
            } catch {
                let time = Date()
                await runtimes?.lost(host.name, at: time, reason: error.message)
                action = registry.report(host, .failed(at: time, reason: error.message))
            }
            guard case .retry(let delay) = action else { return }
            do { try await clock.sleep(for: delay) } catch { return }
        }
    }

    /// Waits for `connection`'s loss, probing it meanwhile; returns why it was lost, or nil when the host was
    /// removed or the service is ending.
    func watch(_ connection: HostConnection, _ host: HostRegistry.RemoteHost) async -> String? {
        await withTaskGroup(of: String?.self) { group in
            group.addTask {
                for await reason in connection.closed { return reason }
                return nil
            }
            group.addTask {
                while true {
                    do { try await clock.sleep(for: settings.probeInterval) } catch { return nil }
                    guard registry.isCurrent(host) else { return nil }
                    guard connection.isAlive else { return "the connection is closed" }
                    do throws(VMSessionError) {
                        let probe = try await connection.probe()
                        registry.measured(host.name, generation: host.generation, capacity: probe.capacity, latency: probe.latency)
                    } catch {
                        return "a probe failed: \(error.message)"
                    }
                }
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}

/// The local host's capacity, read where libvirt's own node info reads it for local drivers: the CPUs the
/// process may use and /proc/meminfo (`MemAvailable` as free memory, what a new VM could take without swapping).
public enum LocalHostCapacity {
    public static func read() -> HostCapacity? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        var kib: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(whereSeparator: { $0 == ":" || $0 == " " })
            if parts.count >= 2, let value = Int(parts[1]) { kib[String(parts[0])] = value }
        }
        guard let total = kib["MemTotal"] else { return nil }
        return HostCapacity(
            cpus: ProcessInfo.processInfo.activeProcessorCount, memory: total / 1024, freeMemory: (kib["MemAvailable"] ?? kib["MemFree"]).map { $0 / 1024 })
    }
}
