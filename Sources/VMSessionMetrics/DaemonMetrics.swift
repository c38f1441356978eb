import Prometheus
import Synchronization
import VMSessionCore

/// The daemon's Prometheus series: one registry per daemon, the counters its parts increment where things
/// happen, and the text exposition of `GET /metrics`, which adds what is read at scrape time (``MetricsSnapshot``).
///
/// It exists so that counting is a one-line hook in the type where the thing happens (no part of the daemon
/// holds metrics state of its own) and so that every family goes through ``MetricFamily`` (see there why).
/// It is also the swift-metrics backend of the process (``factory``), which the HTTP middleware (`HTTPMetrics`)
/// records HTTP requests through.
public final class DaemonMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// Series whose values are read at scrape time; see ``exposition(_:)``.
    private let scraped: Mutex<[SeriesKey: ScrapedSeries]>

    /// Operation durations: from a few milliseconds (pause) to minutes (an image download, a boot under TCG).
    static let operationBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        .seconds(120), .seconds(300),
    ]

    public init() {
        registry = PrometheusCollectorRegistry()
        scraped = Mutex([:])
    }

    /// A swift-metrics factory over this registry, naming what Hummingbird records as ``HTTPMetricNames`` says.
    public var factory: PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.nameAndLabelSanitizer = { HTTPMetricNames.sanitize($0, $1) }
        return factory
    }

    // MARK: Counting

    /// How an operation ended.
    public enum Outcome: String, Sendable {
        case succeeded, failed
        /// Cut short by the daemon's shutdown and left for the next start to settle.
        case interrupted
    }

    public func operationEnded(_ action: SessionAction, _ outcome: Outcome, after duration: Duration) {
        let labels = [("action", action.rawValue), ("outcome", outcome.rawValue)]
        counter(.operations, labels).increment()
        registry.makeDurationHistogram(descriptor: Self.descriptor(.operationDuration), labels: labels, buckets: Self.operationBuckets)
            .record(duration)
    }

    public func eventsWritten(_ events: [SessionEvent]) {
        for event in events { counter(.eventsWritten, [("type", event.kind.rawValue)]).increment() }
    }

    public func eventsDelivered(_ count: Int) {
        guard count > 0 else { return }
        counter(.eventsDelivered).increment(by: Int64(count))
    }

    public func subscribersDropped(_ count: Int) {
        guard count > 0 else { return }
        counter(.subscribersDropped).increment(by: Int64(count))
    }

    /// What a secret check found.
    public enum SecretOutcome: String, Sendable {
        case matched, wrong
        /// A new session's secret, hashed to be kept.
        case created
    }

    public func secretChecked(_ outcome: SecretOutcome) { counter(.secretChecks, [("outcome", outcome.rawValue)]).increment() }
    public func secretThrottled() { counter(.secretThrottled).increment() }

    /// What the origin guard did with a browser's request.
    public enum OriginCheck: String, Sendable {
        case approved
        /// The daemon's own page.
        case sameOrigin = "same_origin"
        /// A GET of the public library code (`vmsession.js`, noVNC, xterm.js).
        case publicAsset = "public"
        case denied, pending
        /// An `Origin` header that is no web origin.
        case invalid
    }

    public func originChecked(_ decision: OriginCheck) { counter(.originChecks, [("decision", decision.rawValue)]).increment() }

    /// An admin's decision about a web origin.
    public enum OriginDecision: String, Sendable {
        case approved, denied, forgotten
    }

    public func originDecided(_ decision: OriginDecision) { counter(.originDecisions, [("decision", decision.rawValue)]).increment() }

    /// A request to the guest-API proxy ended with `status` for the caller.
    public func guestAPIRequest(status: Int) { counter(.guestAPIRequests, [("code", String(status))]).increment() }

    /// Checkpoints take a few milliseconds (two fdatasyncs) and may take a second on a busy disk.
    static let checkpointBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
    ]

    /// The store's checkpointer ran a checkpoint, which `outcome` ended (succeeded or failed).
    public func storeCheckpointed(_ outcome: Outcome, after duration: Duration) {
        counter(.storeCheckpoints, [("outcome", outcome.rawValue)]).increment()
        registry.makeDurationHistogram(descriptor: Self.descriptor(.storeCheckpointDuration), buckets: Self.checkpointBuckets).record(duration)
    }

    private func counter(_ family: MetricFamily, _ labels: [(String, String)] = []) -> Counter {
        labels.isEmpty
            ? registry.makeCounter(descriptor: Self.descriptor(family))
            : registry.makeCounter(descriptor: Self.descriptor(family), labels: labels)
    }

    static func descriptor(_ family: MetricFamily) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: family.name, unitName: "", helpText: family.help)
    }

    // MARK: Scrape time

    /// The text exposition (format 0.0.4): the counters as they are, and `snapshot`'s values. Series of the
    /// snapshot that a previous scrape had and this one has not (a deleted session, a VM that stopped) go.
    public func exposition(_ snapshot: MetricsSnapshot) -> [UInt8] {
        let wanted = Self.series(of: snapshot)
        return scraped.withLock { scraped in
            // The registry's own locks are leaves: nothing here waits, yields or calls out.
            for (key, series) in scraped where wanted[key] == nil {
                series.unregister(from: registry)
                scraped[key] = nil
            }
            for (key, value) in wanted {
                let series = scraped[key] ?? ScrapedSeries.make(key, in: registry)
                scraped[key] = series
                series.set(value)
            }
            return registry.emitToBuffer()
        }
    }

    struct SeriesKey: Hashable {
        let family: MetricFamily
        let labels: [String]

        var labelPairs: [(String, String)] { Array(zip(family.labels, labels)) }
    }

    /// A gauge, or a counter whose total is kept elsewhere (libvirt's): set to the value read.
    enum ScrapedSeries {
        case gauge(Gauge)
        case counter(Counter)

        static func make(_ key: SeriesKey, in registry: PrometheusCollectorRegistry) -> ScrapedSeries {
            let descriptor = DaemonMetrics.descriptor(key.family)
            let labels = key.labelPairs
            switch key.family.kind {
            case .counter:
                return .counter(
                    labels.isEmpty ? registry.makeCounter(descriptor: descriptor) : registry.makeCounter(descriptor: descriptor, labels: labels))
            case .gauge, .histogram:
                return .gauge(labels.isEmpty ? registry.makeGauge(descriptor: descriptor) : registry.makeGauge(descriptor: descriptor, labels: labels))
            }
        }

        func set(_ value: Double) {
            switch self {
            case .gauge(let gauge): gauge.set(to: value)
            case .counter(let counter):
                // Read under the exposition's lock, so no scrape sees the moment between the two.
                counter.reset()
                if value == value.rounded(), abs(value) < 9e15 { counter.increment(by: Int64(max(value, 0))) } else { counter.increment(by: max(value, 0)) }
            }
        }

        func unregister(from registry: PrometheusCollectorRegistry) {
            switch self {
            case .gauge(let gauge): registry.unregisterGauge(gauge)
            case .counter(let counter): registry.unregisterCounter(counter)
            }
        }
    }

    static func series(of snapshot: MetricsSnapshot) -> [SeriesKey: Double] {
        var series: [SeriesKey: Double] = [:]
        func put(_ family: MetricFamily, _ labels: [String] = [], _ value: Double?) {
            if let value { series[SeriesKey(family: family, labels: labels)] = value }
        }
        for state in SessionState.allCases { put(.sessions, [state.rawValue], Double(snapshot.sessionsByState[state] ?? 0)) }
        for (id, cap) in snapshot.executionCaps { put(.executionCap, [id.description], Double(cap.percent) / 100) }
        put(.desktopIdle, [], snapshot.desktopIdle.map { $0 ? 1 : 0 })
        put(.idleThreshold, [], snapshot.idleThresholdSeconds.map(Double.init))
        put(.eventStreamClients, [], snapshot.eventStreamClients.map(Double.init))
        put(.consoleClients, [], snapshot.consoleClients.map(Double.init))
        put(.displayClients, [], snapshot.displayClients.map(Double.init))
        put(.libvirtUp, [], snapshot.machineStatsAnswered.map { $0 ? 1 : 0 })
        put(.storeWriterCheckpoints, [], snapshot.storeWriterCheckpoints.map(Double.init))
        for (name, host) in snapshot.hosts {
            put(.hostUp, [name], host.up ? 1 : 0)
            put(.hostLatency, [name], host.latencySeconds)
        }
        for (id, stats) in snapshot.machines {
            let vm = [id.description]
            put(.cpuTime, vm, stats.cpuSeconds)
            put(.cpuUser, vm, stats.cpuUserSeconds)
            put(.cpuSystem, vm, stats.cpuSystemSeconds)
            put(.virtualCPUs, vm, stats.virtualCPUs.map(Double.init))
            put(.memoryMaximum, vm, stats.memoryMaximumBytes)
            put(.memoryCurrent, vm, stats.memoryCurrentBytes)
            put(.memoryResident, vm, stats.memoryResidentBytes)
            put(.memoryUsable, vm, stats.memoryUsableBytes)
            put(.memoryAvailable, vm, stats.memoryAvailableBytes)
            for disk in stats.disks {
                let labels = vm + [disk.device]
                put(.blockReadBytes, labels, disk.readBytes)
                put(.blockWriteBytes, labels, disk.writeBytes)
                put(.blockReadRequests, labels, disk.readRequests)
                put(.blockWriteRequests, labels, disk.writeRequests)
                put(.blockReadTime, labels, disk.readSeconds)
                put(.blockWriteTime, labels, disk.writeSeconds)
                put(.blockFlushRequests, labels, disk.flushRequests)
                put(.blockCapacity, labels, disk.capacityBytes)
                put(.blockAllocation, labels, disk.allocationBytes)
                put(.blockPhysical, labels, disk.physicalBytes)
            }
            for card in stats.interfaces {
                let labels = vm + [card.device]
                put(.receiveBytes, labels, card.receiveBytes)
                put(.receivePackets, labels, card.receivePackets)
                put(.receiveErrors, labels, card.receiveErrors)
                put(.receiveDrops, labels, card.receiveDrops)
                put(.transmitBytes, labels, card.transmitBytes)
                put(.transmitPackets, labels, card.transmitPackets)
                put(.transmitErrors, labels, card.transmitErrors)
                put(.transmitDrops, labels, card.transmitDrops)
            }
        }
        return series
    }
}

/// What `GET /metrics` reads from the daemon's parts at scrape time: state they own, mirrored as gauges
/// (nil: not known, left out).
public struct MetricsSnapshot: Sendable {
    public var sessionsByState: [SessionState: Int] = [:]
    public var executionCaps: [SessionID: ExecutionCap] = [:]
    public var desktopIdle: Bool?
    public var idleThresholdSeconds: Int?
    public var eventStreamClients: Int?
    public var consoleClients: Int?
    public var displayClients: Int?
    /// Whether libvirt's bulk statistics answered in time (nil: not asked).
    public var machineStatsAnswered: Bool?
    public var machines: [SessionID: MachineStats] = [:]
    /// The store's own checkpoints at its WAL's ceiling (nil: no store read).
    public var storeWriterCheckpoints: Int?
    /// Each libvirt host by name: connected or not, and its last probe's round trip (nil: none).
    public var hosts: [String: (up: Bool, latencySeconds: Double?)] = [:]

    public init() {}
}
