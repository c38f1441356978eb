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

    public init(definition: HostDefinition, link: HostLink.State, capacity: HostCapacity?, latency: Duration?, sessions: Int) {
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
