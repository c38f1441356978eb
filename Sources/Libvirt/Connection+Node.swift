import CLibvirt
import Foundation

/// What libvirt says of the machine behind a connection (`virNodeGetInfo`): what a daemon with many hosts
/// shows as each host's capacity.
public struct NodeInfo: Equatable, Sendable {
    /// Logical CPUs the host has.
    public var cpus: Int
    /// The host's memory, in KiB.
    public var memoryKiB: UInt64
}

extension Connection {
    /// The host's CPUs and memory (one call; over a remote connection, one round trip).
    public func nodeInfo() throws(LibvirtError) -> NodeInfo {
        var info = virNodeInfo()
        guard virNodeGetInfo(pointer, &info) == 0 else { throw LibvirtError.last("virNodeGetInfo") }
        return NodeInfo(cpus: Int(info.cpus), memoryKiB: UInt64(info.memory))
    }

    /// The host's free memory in bytes (`virNodeGetFreeMemory`): cheap, and over a remote connection one round
    /// trip, so it doubles as the probe whose time is the host's latency.
    public func freeMemory() throws(LibvirtError) -> UInt64 {
        let free = virNodeGetFreeMemory(pointer)
        guard free > 0 else { throw LibvirtError.last("virNodeGetFreeMemory") }
        return UInt64(free)
    }

    /// The host's capabilities XML (`virConnectGetCapabilities`): among them the security models its driver
    /// confines guests with, and the user and group its QEMU runs as (the DAC model's base label).
    public func capabilities() throws(LibvirtError) -> String {
        guard let xml = virConnectGetCapabilities(pointer) else { throw LibvirtError.last("virConnectGetCapabilities") }
        defer { free(xml) }
        return String(cString: xml)
    }
}
