/// Where a new session's VM goes among the daemon's libvirt hosts (issue 22): a pure decision over what the
/// daemon knows of each host, so that the rule can be read and tested whole, with no connection in sight.
///
/// The rule (Incus's default, with the admin's limits): a host qualifies when it is reachable, not draining,
/// below its session limit, carries every label the admin requires for the page's origin, has at least as many
/// CPUs as asked for and at least as much free memory; among those, the fewest sessions first, ties by the most
/// free memory, then by name, so that the same inputs always give the same host.
public struct HostPlacement: Equatable, Sendable {
    /// What placement needs to know of one host, as the host's runtime last saw it.
    public struct Host: Equatable, Sendable {
        /// The admin's name for the host (unique).
        public var name: String
        /// The admin's labels (`room=lab1`, `gpu=none`); origins may be restricted to hosts carrying some.
        public var labels: [String: String]
        /// The host's logical CPUs (libvirt's node info).
        public var cpus: Int
        /// The host's free memory in MiB (libvirt's node free memory, less what placed sessions will take).
        public var freeMemory: Int
        /// Sessions placed on the host now.
        public var sessions: Int
        /// The admin's cap on sessions for this host; nil for none.
        public var maxSessions: Int?
        /// The admin asked for no new sessions here (existing ones stay).
        public var draining: Bool
        /// The host's connection is up; false while it is unreachable.
        public var reachable: Bool

        public init(
            name: String, labels: [String: String] = [:], cpus: Int, freeMemory: Int, sessions: Int = 0,
            maxSessions: Int? = nil, draining: Bool = false, reachable: Bool = true
        ) {
            self.name = name
            self.labels = labels
            self.cpus = cpus
            self.freeMemory = freeMemory
            self.sessions = sessions
            self.maxSessions = maxSessions
            self.draining = draining
            self.reachable = reachable
        }
    }

    /// Why a host cannot take the session, in the order they are checked (the first that applies is given).
    public enum Refusal: Equatable, Sendable, CustomStringConvertible {
        case unreachable
        case draining
        /// It lacks (or has another value for) a label the origin is restricted to.
        case missingLabel(key: String, value: String)
        case full(maxSessions: Int)
        case tooFewCPUs(has: Int, needs: Int)
        case tooLittleMemory(freeMiB: Int, needsMiB: Int)

        public var description: String {
            switch self {
            case .unreachable: "unreachable"
            case .draining: "draining"
            case .missingLabel(let key, let value): "not labelled \(key)=\(value)"
            case .full(let maxSessions): "holds its limit of \(maxSessions) sessions"
            case .tooFewCPUs(let has, let needs): "has \(has) CPUs, \(needs) asked for"
            case .tooLittleMemory(let free, let needs): "has \(free) MiB free, \(needs) MiB asked for"
            }
        }
    }

    /// The hosts to choose from (names unique).
    public var hosts: [Host]

    public init(hosts: [Host]) {
        self.hosts = hosts
    }

    /// Why `host` cannot take a session of `cpus` and `memory` MiB from an origin restricted to `labels`, or
    /// nil when it can.
    public static func refusal(of host: Host, cpus: Int, memory: Int, labels: [String: String]) -> Refusal? {
        if !host.reachable { return .unreachable }
        if host.draining { return .draining }
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) where host.labels[key] != value {
            return .missingLabel(key: key, value: value)
        }
        if let limit = host.maxSessions, host.sessions >= limit { return .full(maxSessions: limit) }
        if host.cpus < cpus { return .tooFewCPUs(has: host.cpus, needs: cpus) }
        if host.freeMemory < memory { return .tooLittleMemory(freeMiB: host.freeMemory, needsMiB: memory) }
        return nil
    }

    /// The hosts that can take the session, best first (fewest sessions, then most free memory, then name).
    public func candidates(cpus: Int, memory: Int, labels: [String: String] = [:]) -> [Host] {
        hosts.filter { Self.refusal(of: $0, cpus: cpus, memory: memory, labels: labels) == nil }.sorted { a, b in
            if a.sessions != b.sessions { return a.sessions < b.sessions }
            if a.freeMemory != b.freeMemory { return a.freeMemory > b.freeMemory }
            return a.name < b.name
        }
    }

    /// Checks that `required` (the one host a session can run on: its template's, whose memory image and disk are
    /// there) can take a session with `requirements` from an origin restricted to `labels`, by the same rule as
    /// any host; returns it. Nothing else is tried: a session from a template cannot boot cold elsewhere in its
    /// place, so a host that cannot take it (`why` says whose it is) is a clear error, `host_unreachable` for an
    /// unreachable one, `insufficient_resources` naming the refusal otherwise.
    public func place(
        _ requirements: Requirements, labels: [String: String] = [:], on required: String, why: String
    ) throws(VMSessionError) -> Host {
        guard let host = hosts.first(where: { $0.name == required }) else {
            throw VMSessionError(.unavailable, "\(why) is on host '\(required)', which the daemon no longer has.")
        }
        switch Self.refusal(of: host, cpus: requirements.cpus, memory: requirements.memory, labels: labels) {
        case nil:
            return host
        case .unreachable:
            throw VMSessionError(
                .hostUnreachable, "\(why) is on host '\(required)', which is unreachable now; a session from it can only run there.")
        case let refusal?:
            throw VMSessionError(
                .insufficientResources,
                "\(why) is on host '\(required)', which cannot take the session now (\(refusal)); a session from it can only run there.")
        }
    }

    /// The host a session with `requirements` from an origin restricted to `labels` (the admin's choice for that
    /// origin, never the page's) goes to. Throws `insufficient_resources` naming each host's refusal when none
    /// qualifies, and `unavailable` when there are no hosts at all.
    public func place(_ requirements: Requirements, labels: [String: String] = [:]) throws(VMSessionError) -> Host {
        guard !hosts.isEmpty else { throw VMSessionError(.unavailable, "There are no hosts to place the session on.") }
        if let best = candidates(cpus: requirements.cpus, memory: requirements.memory, labels: labels).first { return best }
        let reasons = hosts.sorted { $0.name < $1.name }.compactMap { host in
            Self.refusal(of: host, cpus: requirements.cpus, memory: requirements.memory, labels: labels)
                .map { "\(host.name) \($0)" }
        }
        throw VMSessionError(
            .insufficientResources,
            "No host can take a session of \(requirements.cpus) CPUs and \(requirements.memory) MiB: \(reasons.joined(separator: "; ")).")
    }
}
