import Foundation

/// Which libvirt host serves each session, and which hosts the daemon reaches now (issue 22), as a value: the
/// decisions of the daemon's ``HostRuntimes`` (where a call goes, what a close on a lost host does, what a
/// host's loss and return mean for its sessions), kept apart from the connections so that they are tested whole
/// with no I/O.
///
/// A session not placed anywhere (closed, or from before hosts) is on the local host, which is always reachable.
public struct HostRoster: Equatable, Sendable {
    /// Whether calls for a host's sessions can go through.
    public enum Reachability: Equatable, Sendable {
        case reachable
        /// Lost at `since` (nil: never connected since the daemon started) because of `reason`.
        case unreachable(since: Date?, reason: String)
    }

    /// Where a call for a session goes.
    public enum Route: Equatable, Sendable {
        case host(String)
        case unreachable(host: String, since: Date?, reason: String)
    }

    /// What removing a session's VM means now.
    public enum Removal: Equatable, Sendable {
        /// Remove it on `host` now (then ``forget(_:)`` the session).
        case now(String)
        /// Its host is lost: the session is forgotten now and its VM removed when `host` returns.
        case later(String)
    }

    /// What a host's (re)connection asks for.
    public struct Return: Equatable, Sendable {
        /// The host's sessions, to look at again against its VMs (as at the daemon's start).
        public var sessions: [SessionID]
        /// Sessions forgotten while it was lost, whose VMs are now removed.
        public var leftovers: [SessionID]
        /// Whether it was lost before (its sessions are told it is back).
        public var wasLost: Bool

        public init(sessions: [SessionID], leftovers: [SessionID], wasLost: Bool) {
            self.sessions = sessions
            self.leftovers = leftovers
            self.wasLost = wasLost
        }
    }

    public private(set) var reachability: [String: Reachability]
    public private(set) var placements: [SessionID: String] = [:]
    /// Sessions forgotten while their host was lost, by host: their VMs are removed when it returns.
    public private(set) var leftovers: [String: Set<SessionID>] = [:]

    public init() {
        reachability = [HostDefinition.localName: .reachable]
    }

    /// The host of `id`: `local` unless it was placed elsewhere.
    public func host(of id: SessionID) -> String { placements[id] ?? HostDefinition.localName }

    /// Where a call for `id` goes.
    public func route(_ id: SessionID) -> Route {
        let host = host(of: id)
        switch reachability[host] {
        case .reachable: return .host(host)
        case .unreachable(let since, let reason): return .unreachable(host: host, since: since, reason: reason)
        case nil: return .unreachable(host: host, since: nil, reason: "the daemon has not connected to it yet")
        }
    }

    /// Whether `host` is reachable now.
    public func reaches(_ host: String) -> Bool { reachability[host] == .reachable }

    /// The sessions placed on `host`, in a stable order.
    public func sessions(on host: String) -> [SessionID] {
        placements.filter { $0.value == host }.map(\.key).sorted { $0.description < $1.description }
    }

    /// Places `id` on `host` (an open, or the store's record at start); a leftover of it is one no longer.
    public mutating func place(_ id: SessionID, on host: String) {
        for name in leftovers.keys { leftovers[name]?.remove(id) }
        placements[id] = host == HostDefinition.localName ? nil : host
    }

    /// A session closed while `host` was lost (known from the store at start): its VM goes when the host returns.
    public mutating func leave(_ id: SessionID, on host: String) {
        guard host != HostDefinition.localName else { return }
        placements[id] = nil
        leftovers[host, default: []].insert(id)
    }

    /// A close asks to remove `id`'s VM.
    public mutating func remove(_ id: SessionID) -> Removal {
        let host = host(of: id)
        if reaches(host) { return .now(host) }
        leave(id, on: host)
        return .later(host)
    }

    /// `id`'s VM was removed: the session is on no host.
    public mutating func forget(_ id: SessionID) {
        placements[id] = nil
    }

    /// `host` is connected: its sessions are looked at again and its leftovers removed.
    public mutating func connected(_ host: String) -> Return {
        let wasLost: Bool
        if case .unreachable(let since, _) = reachability[host] { wasLost = since != nil } else { wasLost = false }
        reachability[host] = .reachable
        let gone = leftovers.removeValue(forKey: host) ?? []
        return Return(sessions: sessions(on: host), leftovers: gone.sorted { $0.description < $1.description }, wasLost: wasLost)
    }

    /// `host` is lost (or could not be connected to): returns the sessions to tell, once per loss (none if it was
    /// already unreachable). The local host is never lost.
    public mutating func lost(_ host: String, at time: Date, reason: String) -> [SessionID] {
        guard host != HostDefinition.localName else { return [] }
        if case .unreachable(let since?, _) = reachability[host] {
            reachability[host] = .unreachable(since: since, reason: reason)
            return []
        }
        reachability[host] = .unreachable(since: time, reason: reason)
        return sessions(on: host)
    }

    /// `host` was removed by the admin: it is forgotten.
    public mutating func removeHost(_ host: String) {
        guard host != HostDefinition.localName else { return }
        reachability[host] = nil
        leftovers[host] = nil
    }
}
