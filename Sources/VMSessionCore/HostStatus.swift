import Foundation

/// A host's CPUs and memory as libvirt reports them (`virNodeGetInfo`, `virNodeGetFreeMemory`), in MiB.
public struct HostCapacity: Equatable, Sendable {
    public var cpus: Int
    public var memory: Int
    /// nil where the driver does not report free memory.
    public var freeMemory: Int?

    public init(cpus: Int, memory: Int, freeMemory: Int?) {
        self.cpus = cpus
        self.memory = memory
        self.freeMemory = freeMemory
    }
}

/// One host as the host registry shows it: what the admin defined, how its link is, what it last measured.
public struct HostStatus: Equatable, Sendable {
    public var definition: HostDefinition
    public var link: HostLink.State
    public var capacity: HostCapacity?
    /// The last probe's round trip (nil: none yet, or the local host, which has no transport).
    public var latency: Duration?
    /// Sessions placed on the host that are not closed.
    public var sessions: Int
    /// Whether its guests get a network there; nil while the daemon has no connection to it (not known).
    public var guestNetwork: GuestNetworkOffer?

    public init(
        definition: HostDefinition, link: HostLink.State, capacity: HostCapacity?, latency: Duration?, sessions: Int,
        guestNetwork: GuestNetworkOffer? = nil
    ) {
        self.guestNetwork = guestNetwork
        self.definition = definition
        self.link = link
        self.capacity = capacity
        self.latency = latency
        self.sessions = sessions
    }

    public var isConnected: Bool {
        if case .connected = link { return true }
        return false
    }
}

/// Whether a host gives its guests a network (the egress sandbox and the guest API), and if not, why: what the
/// admin's host view shows (`guestNetwork`), so that the reason is seen before a page meets it as a 422.
public struct GuestNetworkOffer: Equatable, Sendable {
    public var available: Bool
    /// Why not (absent when available).
    public var reason: String?

    public static let available = GuestNetworkOffer(available: true, reason: nil)
    public static func unavailable(_ reason: String) -> GuestNetworkOffer { GuestNetworkOffer(available: false, reason: reason) }

    /// From a "why not": nil is available.
    public init(unavailability reason: String?) {
        self.init(available: reason == nil, reason: reason)
    }

    public init(available: Bool, reason: String?) {
        self.available = available
        self.reason = available ? nil : reason
    }
}
