import Libvirt
import Logging
import VMSessionCore

/// The snapshot verbs the local and the remote hypervisor share: libvirt keeps internal qcow2 snapshots with the
/// VM's state (see ``LibvirtHypervisor`` for why internal ones) the same way whether the connection is the embedded
/// driver or a host's libvirtd over SSH, so the snapshot's XML, the take, the revert inside the running QEMU, the
/// delete and the listing are spelled once. What differs stays with each hypervisor: where the disk is (a file
/// here, a volume on the host) and how its bytes are measured, and what a revert that restarts QEMU must redo.
extension LibvirtCaller {
    /// The `<domainsnapshot>` of snapshot `name`: memory and the session's disk (`vda`) inside its qcow2; the seed
    /// (`vdb`, a raw read-only disk that never changes and cannot hold an internal snapshot) left out.
    static func snapshotXML(_ name: String, hasSeed: Bool) -> String {
        """
        <domainsnapshot>
          <name>\(name)</name>
          <memory snapshot='internal'/>
          <disks>
            <disk name='vda' snapshot='internal'/>
        \(hasSeed ? "    <disk name='vdb' snapshot='no'/>\n" : "")  </disks>
        </domainsnapshot>
        """
    }

    /// Takes snapshot `name` of the VM of `id` (`virDomainSnapshotCreateXML`).
    func takeSnapshot(_ name: String, of id: SessionID, hasSeed: Bool) async throws(VMSessionError) {
        let xml = Self.snapshotXML(name, hasSeed: hasSeed)
        try await call("take snapshot '\(name)'") { connection in
            guard let domain = try connection.domain(named: id.machineName) else {
                throw VMSessionError(.notFound, "Could not take a snapshot: the VM \(id.machineName) is not defined.")
            }
            try domain.createSnapshot(xml: xml)
        }
    }

    /// Reverts inside the VM's running QEMU (see ``Domain/loadSnapshotInPlace(named:paused:)``): its console,
    /// display and network connections stay as they are. Throws `not_found` for a missing snapshot, and another
    /// error where QEMU (or a driver with no QEMU monitor) refused: then ``revertByRestart(_:of:paused:)``.
    func revertInPlace(_ name: String, of id: SessionID, paused: Bool) async throws(VMSessionError) {
        try await call("revert to snapshot '\(name)'") { connection in
            guard let domain = try connection.domain(named: id.machineName) else {
                throw VMSessionError(.notFound, "Could not revert: the VM \(id.machineName) is not defined.")
            }
            do {
                try domain.loadSnapshotInPlace(named: name, paused: paused)
            } catch let error as LibvirtError where error.isNoSnapshot {
                throw VMSessionError(.notFound, "The VM has no snapshot '\(name)'.")
            }
        }
    }

    /// ``revertInPlace(_:of:paused:)``, and whether it was done: false (logged) where it was refused, so that the
    /// caller falls back on ``revertByRestart(_:of:paused:)``; a missing snapshot is thrown (`not_found`).
    func revertedInPlace(_ name: String, of id: SessionID, paused: Bool, logger: Logger) async throws(VMSessionError) -> Bool {
        do throws(VMSessionError) {
            try await revertInPlace(name, of: id, paused: paused)
            return true
        } catch where error.code == .notFound {
            throw error
        } catch {
            logger.notice(
                "reverting in place was refused; libvirt's revert restarts the VM",
                metadata: ["session": "\(id)", "snapshot": "\(name)", "error": "\(error)"])
            return false
        }
    }

    /// libvirt's own revert, which (9.0) starts a new QEMU from the snapshot.
    func revertByRestart(_ name: String, of id: SessionID, paused: Bool) async throws(VMSessionError) {
        try await call("revert to snapshot '\(name)'") { connection in
            guard let domain = try connection.domain(named: id.machineName) else {
                throw VMSessionError(.notFound, "Could not revert: the VM \(id.machineName) is not defined.")
            }
            do {
                try domain.revertToSnapshot(named: name, paused: paused)
            } catch let error as LibvirtError where error.isNoSnapshot {
                throw VMSessionError(.notFound, "The VM has no snapshot '\(name)'.")
            }
        }
    }

    /// Deletes snapshot `name` of the VM of `id`; succeeds if the VM or the snapshot is not there.
    func removeSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) {
        try await call("delete snapshot '\(name)'") { connection in
            guard let domain = try connection.domain(named: id.machineName) else { return }
            do {
                try domain.deleteSnapshot(named: name)
            } catch let error as LibvirtError where error.isNoSnapshot {
                return
            }
        }
    }

    /// The names of the VM's snapshots (none if it is not defined).
    func domainSnapshotNames(of id: SessionID) async throws(VMSessionError) -> [String] {
        try await call("list the VM's snapshots") { connection in
            try connection.domain(named: id.machineName)?.snapshotNames() ?? []
        }
    }
}
