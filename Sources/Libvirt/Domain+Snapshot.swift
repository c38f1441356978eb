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

    /// Deletes snapshot `name`, its data and its metadata.
    public func deleteSnapshot(named name: String) throws(LibvirtError) {
        guard let snapshot = virDomainSnapshotLookupByName(pointer, name, 0) else {
            throw LibvirtError.last("virDomainSnapshotLookupByName")
        }
        defer { virDomainSnapshotFree(snapshot) }
        guard virDomainSnapshotDelete(snapshot, 0) == 0 else { throw LibvirtError.last("virDomainSnapshotDelete") }
    }
}
