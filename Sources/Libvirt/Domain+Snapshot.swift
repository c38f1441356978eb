import CLibvirt
import Foundation

/// Snapshots libvirt keeps for a domain (here: internal ones, memory and disk inside its qcow2 disk). libvirt
/// keeps their metadata in its own state; every method is a blocking libvirt call.
extension Domain {
    /// Takes a snapshot described by `xml` (a `<domainsnapshot>`).
    public func createSnapshot(xml: String) throws(LibvirtError) {
        guard let snapshot = virDomainSnapshotCreateXML(pointer, xml, 0) else {
            throw LibvirtError.last("virDomainSnapshotCreateXML")
        }
        virDomainSnapshotFree(snapshot)
    }

    /// The names of the domain's snapshots.
    public func snapshotNames() throws(LibvirtError) -> [String] {
        var list: UnsafeMutablePointer<virDomainSnapshotPtr?>?
        let count = virDomainListAllSnapshots(pointer, &list, 0)
        guard count >= 0 else { throw LibvirtError.last("virDomainListAllSnapshots") }
        defer { free(list) }
        var names: [String] = []
        for index in 0..<Int(count) {
            guard let snapshot = list?[index] else { continue }
            if let name = virDomainSnapshotGetName(snapshot) { names.append(String(cString: name)) }
            virDomainSnapshotFree(snapshot)
        }
        return names
    }

    /// Brings the domain back to snapshot `name`: running, or paused if `paused`.
    public func revertToSnapshot(named name: String, paused: Bool) throws(LibvirtError) {
        guard let snapshot = virDomainSnapshotLookupByName(pointer, name, 0) else {
            throw LibvirtError.last("virDomainSnapshotLookupByName")
        }
        defer { virDomainSnapshotFree(snapshot) }
        let flags = paused ? VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED.rawValue : VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING.rawValue
        guard virDomainRevertToSnapshot(snapshot, flags) == 0 else { throw LibvirtError.last("virDomainRevertToSnapshot") }
    }

    /// Brings the domain back to internal snapshot `name` inside the QEMU process that runs it (QEMU's `loadvm`):
    /// running, or paused if `paused`.
    ///
    /// Why, beside ``revertToSnapshot(named:paused:)``: libvirt 9.0 reverts a running domain by killing its QEMU
    /// and starting a new one with `-loadvm`, which costs a whole QEMU start (some 400 QMP round trips to read
    /// the vCPU's features among it) and the old process's exit, 2 to 3 s under TCG here. `loadvm` is the same
    /// QEMU code without the restart: it checks that every writable disk has the snapshot before it touches
    /// anything, reverts them, resets the machine and loads the saved state. libvirt has no API for it, so it
    /// goes through `virDomainQemuMonitorCommand` (libvirt marks the domain "tainted: custom-monitor" in its
    /// log). The vCPUs are stopped through libvirt first, so libvirt's idea of the domain's state stays right.
    /// Throws if the snapshot is missing (nothing changed then) or QEMU refused it; after a refusal the VM may
    /// be left paused at any point, and libvirt's own revert is what brings it back.
    public func loadSnapshotInPlace(named name: String, paused: Bool) throws(LibvirtError) {
        guard let snapshot = virDomainSnapshotLookupByName(pointer, name, 0) else {
            throw LibvirtError.last("virDomainSnapshotLookupByName")
        }
        virDomainSnapshotFree(snapshot)
        if try state() == .running { try suspend() }
        // HMP answers success with nothing and failure with its message.
        let reply = try humanMonitorCommand("loadvm \(name)").trimmingCharacters(in: .whitespacesAndNewlines)
        guard reply.isEmpty else {
            throw LibvirtError(code: Int32(VIR_ERR_OPERATION_FAILED.rawValue), domain: 0, message: "QEMU's loadvm: \(reply)", operation: "loadvm")
        }
        if !paused { try resume() }
    }

    /// Runs a command of QEMU's human monitor and returns its answer (QEMU driver only).
    func humanMonitorCommand(_ command: String) throws(LibvirtError) -> String {
        var result: UnsafeMutablePointer<CChar>?
        let flags = UInt32(VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP.rawValue)
        guard virDomainQemuMonitorCommand(pointer, command, &result, flags) == 0 else {
            throw LibvirtError.last("virDomainQemuMonitorCommand")
        }
        defer { free(result) }
        return result.map { String(cString: $0) } ?? ""
    }

    /// Deletes snapshot `name`, its data and its metadata.
    public func deleteSnapshot(named name: String) throws(LibvirtError) {
        guard let snapshot = virDomainSnapshotLookupByName(pointer, name, 0) else {
            throw LibvirtError.last("virDomainSnapshotLookupByName")
        }
        defer { virDomainSnapshotFree(snapshot) }
        guard virDomainSnapshotDelete(snapshot, 0) == 0 else { throw LibvirtError.last("virDomainSnapshotDelete") }
    }
}
