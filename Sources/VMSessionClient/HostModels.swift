import Foundation

/// A libvirt host as `GET /api/v1/hosts` shows it: what the admin defined, how the daemon's link to it is,
/// what it last measured. The server encodes this very type, and `vmsessionctl` and the tests decode it.
public struct HostInfo: Codable, Sendable, Equatable {
    /// CPUs and memory (MiB) from libvirt's node info; `freeMemory` is absent where the driver does not say.
    public struct Capacity: Codable, Sendable, Equatable {
        public var cpus: Int
        public var memory: Int
        public var freeMemory: Int?

        public init(cpus: Int, memory: Int, freeMemory: Int?) {
            self.cpus = cpus
            self.memory = memory
            self.freeMemory = freeMemory
        }
    }

    /// Whether the host gives its guests a network (the egress sandbox and the guest API), and why not.
    public struct GuestNetwork: Codable, Sendable, Equatable {
        public var available: Bool
        /// Why guests get no network there (absent when they do).
        public var reason: String?

        public init(available: Bool, reason: String? = nil) {
            self.available = available
            self.reason = reason
        }
    }

    public var name: String
    /// The libvirt URI the daemon connects to.
    public var uri: String
    public var labels: [String: String]
    public var maxSessions: Int?
    /// The admin asked for no new sessions here.
    public var draining: Bool
    /// `local` (the daemon's own), `config` (the config file's `hosts`) or `admin` (added through the API).
    public var source: String
    /// `connecting` (first attempt under way), `connected` or `unreachable`.
    public var state: String
    /// Connected since, or unreachable since (the moment the host was first lost).
    public var since: Date?
    /// Why the host is unreachable (the last failure).
    public var reason: String?
    public var capacity: Capacity?
    /// Sessions on the host that are not closed.
    public var sessions: Int
    /// The last probe's round trip in milliseconds (absent for the local host and while unreachable).
    public var latencyMs: Double?
    /// Whether its guests get a network there; absent while the daemon has no connection to the host (not known).
    public var guestNetwork: GuestNetwork?

    public init(
        name: String, uri: String, labels: [String: String], maxSessions: Int?, draining: Bool, source: String, state: String,
        since: Date?, reason: String?, capacity: Capacity?, sessions: Int, latencyMs: Double?, guestNetwork: GuestNetwork? = nil
    ) {
        self.guestNetwork = guestNetwork
        self.name = name
        self.uri = uri
        self.labels = labels
        self.maxSessions = maxSessions
        self.draining = draining
        self.source = source
        self.state = state
        self.since = since
        self.reason = reason
        self.capacity = capacity
        self.sessions = sessions
        self.latencyMs = latencyMs
    }
}

/// `GET /api/v1/hosts`.
public struct HostList: Codable, Sendable {
    public var hosts: [HostInfo]

    public init(hosts: [HostInfo]) { self.hosts = hosts }
}

/// `POST /api/v1/hosts`: a remote host to add.
public struct HostRequest: Codable, Sendable {
    public static let fields: Set<String> = ["name", "uri", "labels", "maxSessions"]

    public var name: String
    public var uri: String
    public var labels: [String: String]?
    public var maxSessions: Int?

    public init(name: String, uri: String, labels: [String: String]? = nil, maxSessions: Int? = nil) {
        self.name = name
        self.uri = uri
        self.labels = labels
        self.maxSessions = maxSessions
    }
}

extension VMSessionClient {
    // MARK: Hosts (admin)

    /// Every libvirt host, the local one first among them by name.
    public func hosts() async throws -> [HostInfo] {
        let list: HostList = try await get("/api/v1/hosts")
        return list.hosts
    }

    public func host(_ name: String) async throws -> HostInfo { try await get("/api/v1/hosts/\(Self.escaped(name))") }

    /// Adds a remote host; the daemon connects to it in the background (see its `state`).
    public func addHost(_ request: HostRequest) async throws -> HostInfo {
        var body: [String: JSONValue] = ["name": .string(request.name), "uri": .string(request.uri)]
        if let labels = request.labels { body["labels"] = .object(labels.mapValues { .string($0) }) }
        if let maxSessions = request.maxSessions { body["maxSessions"] = .number(Double(maxSessions)) }
        return try await send("POST", "/api/v1/hosts", body: body)
    }

    /// Stops (`draining` true) or resumes placing new sessions on host `name`.
    public func drainHost(_ name: String, draining: Bool = true) async throws -> HostInfo {
        try await send("POST", "/api/v1/hosts/\(Self.escaped(name))/\(draining ? "drain" : "undrain")", body: [:])
    }

    /// Removes a host added through the API; refused while it holds sessions.
    public func removeHost(_ name: String) async throws { try await sendEmpty("DELETE", "/api/v1/hosts/\(Self.escaped(name))") }
}

/// The host a session's VM is placed on, as the session's view shows it (the `host` field): its name, whether the
/// daemon reaches it now (`connected`, `connecting`, or `unreachable` with `since` and `reason`: actions on the VM
/// then answer 503 `host_unreachable`), and its libvirt URI, for the admin token only (pages see the name).
public struct SessionHost: Codable, Sendable, Equatable {
    public var name: String
    /// `connected`, `connecting` or `unreachable`; absent where the daemon serves no host list (some tests).
    public var state: String?
    /// Unreachable since.
    public var since: Date?
    /// Why it is unreachable.
    public var reason: String?
    /// The host's libvirt URI (admin only).
    public var uri: String?

    public init(name: String, state: String? = nil, since: Date? = nil, reason: String? = nil, uri: String? = nil) {
        self.name = name
        self.state = state
        self.since = since
        self.reason = reason
        self.uri = uri
    }
}
