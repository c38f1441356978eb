import Foundation
import Logging
import Synchronization
import VMSessionCore
import VMSessionStore

/// The daemon's libvirt hosts (issue 22), and the one owner of what is known of them: the admin's definitions
/// (kept in the store), each remote host's link (a ``HostLink``), its last measured capacity and latency.
///
/// The admin changes hosts here (add, drain, remove); the ``HostMonitor`` reports here what its connections
/// see and learns here which hosts to follow (``remoteHosts``). Reads are a locked copy, so routes never wait
/// for a host. Nothing is held across a call out: store writes happen off the pool before the lock is taken,
/// and the session count comes from a hook read outside the lock.
public final class HostRegistry: Sendable {
    /// A remote host for the monitor to follow, until ``isCurrent(_:)`` says it was removed (or replaced).
    public struct RemoteHost: Equatable, Sendable {
        public let name: String
        public let uri: String
        /// Tells this definition of the host from a later one with the same name.
        public let generation: UInt64
    }

    private struct Entry {
        var definition: HostDefinition
        var generation: UInt64
        var link: HostLink
        var capacity: HostCapacity?
        var latency: Duration?
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var nextGeneration: UInt64 = 1
    }

    private let store: SessionStore
    private let state: Mutex<State>
    private let backoff: HostLink.Backoff
    private let sessionCount: @Sendable (String) -> Int
    private let guestNetwork: @Sendable (String) -> GuestNetworkOffer?
    private let now: @Sendable () -> Date
    private let logger: Logger
    private let continuation: AsyncStream<RemoteHost>.Continuation
    /// The remote hosts to follow: those known at start, then each one added. One consumer (the monitor).
    public let remoteHosts: AsyncStream<RemoteHost>

    /// Loads the hosts: the local one (`localURI`, always there), the config file's `configured` ones (rewritten
    /// into the store; the config's hosts no longer in the file are dropped) and those the admin added before.
    /// `sessionCount` says how many sessions that are not closed a host holds; `guestNetwork`, whether a host's guests
    /// get a network there (nil: not known now).
    public init(
        store: SessionStore, localURI: String, configured: [HostDefinition], backoff: HostLink.Backoff = .init(),
        sessionCount: @escaping @Sendable (String) -> Int, guestNetwork: @escaping @Sendable (String) -> GuestNetworkOffer? = { _ in nil },
        now: @escaping @Sendable () -> Date = { Date() }, logger: Logger
    ) throws {
        self.guestNetwork = guestNetwork
        self.store = store
        self.backoff = backoff
        self.sessionCount = sessionCount
        self.now = now
        self.logger = logger
        (remoteHosts, continuation) = AsyncStream<RemoteHost>.makeStream()
        let started = now()
        let names = Set(configured.map(\.name))
        guard names.count == configured.count else {
            throw VMSessionError(.invalidArgument, "The config file's hosts must have different names.")
        }
        let stored = try storeCall { try store.hosts() }
        // Start-up, before any request: the store's calls are made here, as the other registries make theirs.
        try storeCall {
            try store.saveHost(
                HostDefinition(name: HostDefinition.localName, uri: localURI, source: .local), at: started, keepDraining: true)
            for host in stored where host.source == .config && !names.contains(host.name) { try store.deleteHost(host.name) }
            for host in configured {
                if let clash = stored.first(where: { $0.name == host.name && $0.source == .admin }) {
                    throw VMSessionError(
                        .invalidArgument,
                        "The config file's host '\(host.name)' has the name of a host added with 'vmsessionctl hosts add' (\(clash.uri)); remove one.")
                }
                try store.saveHost(host, at: started, keepDraining: true)
            }
        }
        var state = State()
        for definition in try storeCall({ try store.hosts() }) {
            var link = HostLink(backoff: backoff, now: started)
            if definition.source == .local { _ = link.handle(.connected(at: started)) }
            state.entries[definition.name] = Entry(definition: definition, generation: state.nextGeneration, link: link)
            state.nextGeneration += 1
        }
        self.state = Mutex(state)
        for entry in state.entries.values.sorted(by: { $0.definition.name < $1.definition.name }) where entry.definition.source != .local {
            continuation.yield(RemoteHost(name: entry.definition.name, uri: entry.definition.uri, generation: entry.generation))
        }
    }

    // MARK: Reading

    /// Every host, by name (the local one among them).
    public func all() -> [HostStatus] {
        let entries = state.withLock { Array($0.entries.values) }
        return entries.sorted { $0.definition.name < $1.definition.name }.map(status)
    }

    /// The host called `name`; `not_found` if there is none.
    public func host(named name: String) throws(VMSessionError) -> HostStatus {
        guard let entry = state.withLock({ $0.entries[name] }) else { throw Self.unknown(name) }
        return status(entry)
    }

    private func status(_ entry: Entry) -> HostStatus {
        HostStatus(
            definition: entry.definition, link: entry.link.state, capacity: entry.capacity, latency: entry.latency,
            sessions: sessionCount(entry.definition.name), guestNetwork: guestNetwork(entry.definition.name))
    }

    // MARK: Placement

    /// What ``HostPlacement`` needs of each host, as known now: reachable (its link connected), draining, labels,
    /// limit, CPUs and free memory (the last measured; a host not measured yet is not refused for them), and the
    /// sessions it holds that are not closed. A host `serving` says has no hypervisor here counts as unreachable.
    public func placement(serving: (String) -> Bool = { _ in true }) -> HostPlacement {
        HostPlacement(hosts: all().map { host in
            HostPlacement.Host(
                name: host.definition.name, labels: host.definition.labels, cpus: host.capacity?.cpus ?? Int.max,
                freeMemory: host.capacity.map { $0.freeMemory ?? $0.memory } ?? Int.max, sessions: host.sessions,
                maxSessions: host.definition.maxSessions, draining: host.definition.draining,
                reachable: host.isConnected && serving(host.definition.name))
        })
    }

    /// The host a session of `requirements` from an origin restricted to `labels` goes to, by ``HostPlacement``'s
    /// rule; `insufficient_resources` naming each host's refusal when none fits. With `required` (a session from a
    /// template: the host its files are on, `why` names it), only that host, checked by the same rule. A daemon with
    /// only its own host places everything there, as before hosts existed.
    public func place(
        _ requirements: Requirements, labels: [String: String] = [:], serving: (String) -> Bool = { _ in true },
        on required: (host: String, why: String)? = nil
    ) throws(VMSessionError) -> String {
        let onlyLocal = state.withLock { $0.entries.count == 1 && $0.entries[HostDefinition.localName] != nil }
        if onlyLocal, labels.isEmpty, required == nil || required?.host == HostDefinition.localName { return HostDefinition.localName }
        if let required {
            return try placement(serving: serving).place(requirements, labels: labels, on: required.host, why: required.why).name
        }
        return try placement(serving: serving).place(requirements, labels: labels).name
    }

    static func unknown(_ name: String) -> VMSessionError {
        VMSessionError(.notFound, "There is no host '\(name.prefix(80))'; see GET /api/v1/hosts.")
    }

    // MARK: The admin's changes

    /// Adds a remote host (checked by ``HostDefinition/validated(name:uri:labels:maxSessions:source:)`` before):
    /// stored, then followed by the monitor. `invalid_state` if the name is taken.
    public func add(_ definition: HostDefinition) async throws(VMSessionError) -> HostStatus {
        if state.withLock({ $0.entries[definition.name] != nil }) {
            throw VMSessionError(.invalidState, "There is already a host named '\(definition.name)'.")
        }
        let store = self.store, time = now()
        try await offPool { () throws(VMSessionError) in try storeCall { try store.addHost(definition, at: time) } }
        let entry = state.withLock { state in
            let entry = Entry(definition: definition, generation: state.nextGeneration, link: HostLink(backoff: backoff, now: time))
            state.nextGeneration += 1
            state.entries[definition.name] = entry
            return entry
        }
        continuation.yield(RemoteHost(name: definition.name, uri: definition.uri, generation: entry.generation))
        logger.notice("host added", metadata: ["host": "\(definition.name)", "uri": "\(definition.uri)"])
        return status(entry)
    }

    /// Sets whether `name` takes new sessions (a draining host keeps the ones it has).
    public func setDraining(_ name: String, _ draining: Bool) async throws(VMSessionError) -> HostStatus {
        guard state.withLock({ $0.entries[name] != nil }) else { throw Self.unknown(name) }
        let store = self.store
        let found = try await offPool { () throws(VMSessionError) in try storeCall { try store.setHostDraining(name, draining) } }
        guard found else { throw Self.unknown(name) }
        let entry = state.withLock { state -> Entry? in
            state.entries[name]?.definition.draining = draining
            return state.entries[name]
        }
        guard let entry else { throw Self.unknown(name) }
        logger.notice(draining ? "host draining" : "host undrained", metadata: ["host": "\(name)"])
        return status(entry)
    }

    /// Removes a host the admin added. Refused (`invalid_state`) for the local host, a host of the config file,
    /// and a host that holds sessions; the monitor closes its connection within a probe interval.
    public func remove(_ name: String) async throws(VMSessionError) {
        guard let entry = state.withLock({ $0.entries[name] }) else { throw Self.unknown(name) }
        switch entry.definition.source {
        case .local:
            throw VMSessionError(.invalidState, "'\(name)' is the daemon's own host; it cannot be removed (drain it instead).")
        case .config:
            throw VMSessionError(.invalidState, "Host '\(name)' is defined in the config file ('hosts'); remove it there and restart.")
        case .admin:
            break
        }
        let sessions = sessionCount(name)
        guard sessions == 0 else {
            throw VMSessionError(
                .invalidState, "Host '\(name)' holds \(sessions) session(s); close them (or drain the host and wait) before removing it.")
        }
        let store = self.store
        try await offPool { () throws(VMSessionError) in _ = try storeCall { try store.deleteHost(name) } }
        state.withLock { state in
            if state.entries[name]?.generation == entry.generation { state.entries[name] = nil }
        }
        logger.notice("host removed", metadata: ["host": "\(name)"])
    }

    // MARK: What the monitor sees

    /// Whether `host` is still defined as the monitor was told (not removed, not replaced).
    public func isCurrent(_ host: RemoteHost) -> Bool {
        state.withLock { $0.entries[host.name]?.generation == host.generation }
    }

    /// Applies what happened to `host`'s link and returns what the monitor does next (nil: the host was
    /// removed, or the event changed nothing).
    public func report(_ host: RemoteHost, _ event: HostLink.Event) -> HostLink.Action? {
        let (action, change) = state.withLock { state -> (HostLink.Action?, (String, String)?) in
            guard var entry = state.entries[host.name], entry.generation == host.generation else { return (nil, nil) }
            let before = entry.link.stateName
            let action = entry.link.handle(event)
            if case .unreachable = entry.link.state { entry.latency = nil }
            state.entries[host.name] = entry
            let after = entry.link.stateName
            return (action, before == after ? nil : (before, after))
        }
        if let change {
            let (before, after) = change
            var metadata: Logger.Metadata = ["host": "\(host.name)", "from": "\(before)", "to": "\(after)"]
            switch event {
            case .failed(_, let reason), .lost(_, let reason): metadata["reason"] = "\(reason)"
            case .connected: break
            }
            logger.notice("host \(after)", metadata: metadata)
        }
        return action
    }

    /// Records what a probe of `name` measured (the local host's capacity, or a remote host's probe).
    public func measured(_ name: String, generation: UInt64? = nil, capacity: HostCapacity?, latency: Duration?) {
        state.withLock { state in
            guard var entry = state.entries[name], generation == nil || entry.generation == generation else { return }
            if let capacity { entry.capacity = capacity }
            entry.latency = latency
            state.entries[name] = entry
        }
    }

    /// Stops announcing hosts to the monitor (its loop over ``remoteHosts`` ends).
    public func finish() { continuation.finish() }
}
