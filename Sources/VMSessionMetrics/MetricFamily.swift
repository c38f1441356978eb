/// One series family the daemon exposes: its name, Prometheus type, help text and label names.
///
/// Why a table: swift-prometheus traps (`fatalError`) when one name is registered as two types, with two help
/// texts, with two bucket layouts, or both with and without labels. Every family the daemon registers is
/// declared once here and registered only through it, so a test can check the whole set (and that none
/// collides with what Hummingbird's `MetricsMiddleware` registers, see ``HTTPMetricNames``).
public struct MetricFamily: Hashable, Sendable {
    public enum Kind: String, Sendable {
        case counter, gauge, histogram
    }

    public let name: String
    public let kind: Kind
    public let help: String
    public let labels: [String]

    init(_ name: String, _ kind: Kind, _ help: String, labels: [String] = []) {
        self.name = name
        self.kind = kind
        self.help = help
        self.labels = labels
    }
}

extension MetricFamily {
    // MARK: Counted where it happens

    public static let operations = MetricFamily(
        "vmsessiond_operations_total", .counter, "Operations (open, start, pause, …) that ended, by action and outcome.",
        labels: ["action", "outcome"])
    public static let operationDuration = MetricFamily(
        "vmsessiond_operation_duration_seconds", .histogram, "How long operations took to carry out, by action and outcome.",
        labels: ["action", "outcome"])
    public static let eventsWritten = MetricFamily(
        "vmsessiond_events_written_total", .counter, "Session events written to the store, by type.", labels: ["type"])
    public static let eventsDelivered = MetricFamily(
        "vmsessiond_events_delivered_total", .counter, "Session events handed to live subscribers (event streams, the idle controller).")
    public static let subscribersDropped = MetricFamily(
        "vmsessiond_event_subscribers_dropped_total", .counter, "Event subscribers ended because they fell too far behind.")
    public static let secretChecks = MetricFamily(
        "vmsessiond_secret_checks_total", .counter,
        "Session secrets checked: matched, wrong, or hashed for a new session (created).", labels: ["outcome"])
    public static let secretThrottled = MetricFamily(
        "vmsessiond_secret_throttled_total", .counter, "Session requests refused by the secret throttle (too_many_attempts).")
    public static let originChecks = MetricFamily(
        "vmsessiond_origin_checks_total", .counter,
        "Browser requests (with an Origin header) by what the origin guard decided: approved, same_origin, public, denied, pending, invalid.",
        labels: ["decision"])
    public static let originDecisions = MetricFamily(
        "vmsessiond_origin_decisions_total", .counter, "Web origins approved, denied or forgotten by the admin.", labels: ["decision"])
    public static let guestAPIRequests = MetricFamily(
        "vmsessiond_guest_api_requests_total", .counter,
        "Requests to the guest-API proxy, by the HTTP status the caller got (the guest's, or the daemon's refusal).",
        labels: ["code"])
    public static let storeCheckpoints = MetricFamily(
        "vmsessiond_store_checkpoints_total", .counter,
        "Checkpoints of the store's write-ahead log run beside the writer (StoreCheckpointer), by outcome.", labels: ["outcome"])
    public static let storeCheckpointDuration = MetricFamily(
        "vmsessiond_store_checkpoint_duration_seconds", .histogram,
        "How long each checkpoint of the store's write-ahead log took (copying it into the database file, two fdatasyncs).")

    // MARK: Read at scrape time

    public static let sessions = MetricFamily("vmsessiond_sessions", .gauge, "Sessions by state.", labels: ["state"])
    public static let executionCap = MetricFamily(
        "vmsessiond_session_execution_cap_ratio", .gauge, "Each session's execution cap (1 = no limit), for sessions that are not closed.",
        labels: ["session"])
    public static let desktopIdle = MetricFamily(
        "vmsessiond_desktop_idle", .gauge, "1 while the desktop counts as idle, 0 while the user is active.")
    public static let idleThreshold = MetricFamily(
        "vmsessiond_idle_threshold_seconds", .gauge, "Seconds without input before the desktop counts as idle.")
    public static let eventStreamClients = MetricFamily(
        "vmsessiond_event_stream_clients", .gauge, "Open Server-Sent Event streams.")
    public static let consoleClients = MetricFamily("vmsessiond_console_clients", .gauge, "Open serial-console WebSockets.")
    public static let displayClients = MetricFamily("vmsessiond_display_clients", .gauge, "Open display (VNC) WebSockets.")
    public static let storeWriterCheckpoints = MetricFamily(
        "vmsessiond_store_writer_checkpoints_total", .counter,
        "Checkpoints of the store's write-ahead log that a commit ran itself, because the log reached its ceiling before "
            + "the checkpointer ran: each made that commit (a request) pay for the copy and the syncs.")
    public static let libvirtUp = MetricFamily(
        "vmsessiond_libvirt_stats_up", .gauge,
        "1 if libvirt's bulk statistics (virConnectGetAllDomainStats) answered within the scrape's deadline, else 0.")

    public static let hostUp = MetricFamily(
        "vmsessiond_host_up", .gauge, "1 while the daemon is connected to the libvirt host, else 0 (connecting, unreachable).",
        labels: ["host"])
    public static let hostLatency = MetricFamily(
        "vmsessiond_host_latency_seconds", .gauge, "The last probe's round trip to the remote libvirt host (virNodeGetFreeMemory).",
        labels: ["host"])

    // MARK: Per VM, from libvirt's bulk statistics (named as the libvirt exporters name them)

    public static let cpuTime = MetricFamily(
        "vmsessiond_domain_cpu_time_seconds_total", .counter, "CPU time of the VM's process (cpu.time).", labels: ["session"])
    public static let cpuUser = MetricFamily(
        "vmsessiond_domain_cpu_user_seconds_total", .counter, "User CPU time of the VM's process (cpu.user).", labels: ["session"])
    public static let cpuSystem = MetricFamily(
        "vmsessiond_domain_cpu_system_seconds_total", .counter, "System CPU time of the VM's process (cpu.system).", labels: ["session"])
    public static let virtualCPUs = MetricFamily(
        "vmsessiond_domain_virtual_cpus", .gauge, "vCPUs the VM has now (vcpu.current).", labels: ["session"])
    public static let memoryMaximum = MetricFamily(
        "vmsessiond_domain_memory_maximum_bytes", .gauge, "Memory the VM may have (balloon.maximum).", labels: ["session"])
    public static let memoryCurrent = MetricFamily(
        "vmsessiond_domain_memory_current_bytes", .gauge, "Memory the VM has now (balloon.current).", labels: ["session"])
    public static let memoryResident = MetricFamily(
        "vmsessiond_domain_memory_rss_bytes", .gauge, "Resident memory of the VM's process (balloon.rss).", labels: ["session"])
    public static let memoryUsable = MetricFamily(
        "vmsessiond_domain_memory_usable_bytes", .gauge, "Memory the guest reports usable (balloon.usable).", labels: ["session"])
    public static let memoryAvailable = MetricFamily(
        "vmsessiond_domain_memory_available_bytes", .gauge, "Memory the guest reports available (balloon.available).", labels: ["session"])
    static let disk = ["session", "device"]
    public static let blockReadBytes = MetricFamily(
        "vmsessiond_domain_block_read_bytes_total", .counter, "Bytes read from the disk (block.N.rd.bytes).", labels: disk)
    public static let blockWriteBytes = MetricFamily(
        "vmsessiond_domain_block_write_bytes_total", .counter, "Bytes written to the disk (block.N.wr.bytes).", labels: disk)
    public static let blockReadRequests = MetricFamily(
        "vmsessiond_domain_block_read_requests_total", .counter, "Read requests to the disk (block.N.rd.reqs).", labels: disk)
    public static let blockWriteRequests = MetricFamily(
        "vmsessiond_domain_block_write_requests_total", .counter, "Write requests to the disk (block.N.wr.reqs).", labels: disk)
    public static let blockReadTime = MetricFamily(
        "vmsessiond_domain_block_read_time_seconds_total", .counter, "Time spent reading the disk (block.N.rd.times).", labels: disk)
    public static let blockWriteTime = MetricFamily(
        "vmsessiond_domain_block_write_time_seconds_total", .counter, "Time spent writing the disk (block.N.wr.times).", labels: disk)
    public static let blockFlushRequests = MetricFamily(
        "vmsessiond_domain_block_flush_requests_total", .counter, "Flush requests to the disk (block.N.fl.reqs).", labels: disk)
    public static let blockCapacity = MetricFamily(
        "vmsessiond_domain_block_capacity_bytes", .gauge, "The disk's size as the guest sees it (block.N.capacity).", labels: disk)
    public static let blockAllocation = MetricFamily(
        "vmsessiond_domain_block_allocation_bytes", .gauge, "The disk's highest written offset (block.N.allocation).", labels: disk)
    public static let blockPhysical = MetricFamily(
        "vmsessiond_domain_block_physical_bytes", .gauge, "The disk's file size on the host (block.N.physical).", labels: disk)
    static let card = ["session", "device"]
    public static let receiveBytes = MetricFamily(
        "vmsessiond_domain_interface_receive_bytes_total", .counter, "Bytes received by the VM's network card (net.N.rx.bytes).",
        labels: card)
    public static let receivePackets = MetricFamily(
        "vmsessiond_domain_interface_receive_packets_total", .counter, "Packets received (net.N.rx.pkts).", labels: card)
    public static let receiveErrors = MetricFamily(
        "vmsessiond_domain_interface_receive_errors_total", .counter, "Receive errors (net.N.rx.errs).", labels: card)
    public static let receiveDrops = MetricFamily(
        "vmsessiond_domain_interface_receive_drops_total", .counter, "Received packets dropped (net.N.rx.drop).", labels: card)
    public static let transmitBytes = MetricFamily(
        "vmsessiond_domain_interface_transmit_bytes_total", .counter, "Bytes sent by the VM's network card (net.N.tx.bytes).",
        labels: card)
    public static let transmitPackets = MetricFamily(
        "vmsessiond_domain_interface_transmit_packets_total", .counter, "Packets sent (net.N.tx.pkts).", labels: card)
    public static let transmitErrors = MetricFamily(
        "vmsessiond_domain_interface_transmit_errors_total", .counter, "Transmit errors (net.N.tx.errs).", labels: card)
    public static let transmitDrops = MetricFamily(
        "vmsessiond_domain_interface_transmit_drops_total", .counter, "Sent packets dropped (net.N.tx.drop).", labels: card)

    /// Every family the daemon registers itself (the HTTP ones come from Hummingbird, see ``HTTPMetricNames``).
    public static let all: [MetricFamily] = [
        operations, operationDuration, eventsWritten, eventsDelivered, subscribersDropped, secretChecks, secretThrottled,
        originChecks, originDecisions, guestAPIRequests, storeCheckpoints, storeCheckpointDuration,
        sessions, executionCap, desktopIdle, idleThreshold, eventStreamClients, consoleClients, displayClients, libvirtUp,
        storeWriterCheckpoints, hostUp, hostLatency,
        cpuTime, cpuUser, cpuSystem, virtualCPUs, memoryMaximum, memoryCurrent, memoryResident, memoryUsable, memoryAvailable,
        blockReadBytes, blockWriteBytes, blockReadRequests, blockWriteRequests, blockReadTime, blockWriteTime, blockFlushRequests,
        blockCapacity, blockAllocation, blockPhysical,
        receiveBytes, receivePackets, receiveErrors, receiveDrops, transmitBytes, transmitPackets, transmitErrors, transmitDrops,
    ]
}

/// What the HTTP middleware records (VMSessionAPI's `HTTPMetrics`, under the names of Hummingbird's `MetricsMiddleware`), and the names the daemon gives them.
///
/// The middleware's labels (hummingbird 2.28, `MetricsCache`): `hb.requests` and `http.server.request.duration`
/// with `http.route`, `http.request.method`, `http.response.status_code`; `hb.request.errors` with `http.route`,
/// `http.request.method`, `error.type`; `http.server.active_requests` with `http.request.method`. Each name
/// always comes with the same label names, always with labels, so none of swift-prometheus's traps can fire
/// among them; they are renamed under `vmsessiond_http_` (Prometheus's conventions: base unit, `_total`), which
/// keeps them apart from every ``MetricFamily``. Labels are only made valid (`.` becomes `_`).
public enum HTTPMetricNames {
    public static let renamed: [String: String] = [
        "hb.requests": "vmsessiond_http_requests_total",
        "http.server.request.duration": "vmsessiond_http_request_duration_seconds",
        "hb.request.errors": "vmsessiond_http_request_errors_total",
        "http.server.active_requests": "vmsessiond_http_active_requests",
    ]

    /// The name and labels a swift-metrics metric is registered with.
    public static func sanitize(_ label: String, _ dimensions: [(String, String)]) -> (String, [(String, String)]) {
        let name = renamed[label] ?? "vmsessiond_" + valid(label)
        return (name, dimensions.map { (valid($0.0), $0.1) })
    }

    static func valid(_ text: String) -> String {
        String(text.map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
    }
}
