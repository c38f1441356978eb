import Foundation
import Libvirt
import VMSessionCore

/// Snapshots as libvirt 9.0 with QEMU 7.2 can revert them: internal qcow2 snapshots with the VM's state
/// (`savevm`/`loadvm` into the session's `disk.qcow2`). External memory snapshots cannot be reverted
/// before libvirt 9.9, and a `virDomainSave` file per snapshot beside a copy of the disk costs a full
/// memory write plus a disk copy each time (measured in the README). libvirt keeps the snapshots' metadata
/// in its state (`<root>/lib/qemu/snapshot/`), so they outlive the daemon; `undefine` drops it and the
/// disk goes with the VM's directory.
extension LibvirtHypervisor {
    public func createSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) -> Int64 {
        try VMSnapshot.validate(name: name)
        let diskPath = machineDirectory(for: id) + "/disk.qcow2"
        // The seed is a raw, read-only disk: it cannot hold an internal snapshot and never changes, so it
        // is left out. The session's own disk is always qcow2 (see DomainXML).
        let hasSeed = FileManager.default.fileExists(atPath: seedPath(for: id))
        let xml = """
            <domainsnapshot>
              <name>\(name)</name>
              <memory snapshot='internal'/>
              <disks>
                <disk name='vda' snapshot='internal'/>
            \(hasSeed ? "    <disk name='vdb' snapshot='no'/>\n" : "")  </disks>
            </domainsnapshot>
            """
        // Only qcow2 holds internal snapshots with the VM's state (its magic: "QFI\u{FB}").
        let magic = FileHandle(forReadingAtPath: diskPath).flatMap { try? $0.read(upToCount: 4) }
        guard magic == Data([0x51, 0x46, 0x49, 0xFB]) else {
            throw VMSessionError(.notSupported, "The VM's disk \(diskPath) is not qcow2, which snapshots with memory need.")
        }
        let before = Self.allocatedBytes(diskPath)
        try await call("take snapshot '\(name)'") { connection in
            guard let domain = try connection.domain(named: id.machineName) else {
                throw VMSessionError(.notFound, "Could not take a snapshot: the VM \(id.machineName) is not defined.")
            }
            try domain.createSnapshot(xml: xml)
        }
        return max(0, Self.allocatedBytes(diskPath) - before)
    }

    /// Reverts inside the VM's running QEMU (see ``Domain/loadSnapshotInPlace(named:paused:)``): its network,
    /// console and display connections stay as they are. Where that is refused (a driver with no QEMU
    /// monitor, or QEMU's `loadvm` failed), libvirt's own revert starts a new QEMU from the snapshot.
    public func revertToSnapshot(_ name: String, of id: SessionID, paused: Bool) async throws(VMSessionError) {
        if description.driver == "QEMU" {
            do throws(VMSessionError) {
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
                return
            } catch where error.code == .notFound {
                throw error
            } catch {
                logger.notice(
                    "reverting in place was refused; libvirt's revert restarts the VM",
                    metadata: ["session": "\(id)", "snapshot": "\(name)", "error": "\(error)"])
            }
        }
        // libvirt 9.0 reverts by starting a new QEMU from the snapshot: its "stopped" event must not take the
        // guest's network down, and the new process connects to the network as a start's does.
        starting.insert(id)
        defer { starting.remove(id) }
        try await network?.up(id)
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

    public func deleteSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) {
        try await call("delete snapshot '\(name)'") { connection in
            guard let domain = try connection.domain(named: id.machineName) else { return }
            do {
                try domain.deleteSnapshot(named: name)
            } catch let error as LibvirtError where error.isNoSnapshot {
                return
            }
        }
    }

    public func snapshotNames(of id: SessionID) async throws(VMSessionError) -> [String] {
        try await call("list the VM's snapshots") { connection in
            try connection.domain(named: id.machineName)?.snapshotNames() ?? []
        }
    }

    /// What a file takes on disk (its allocated blocks), 0 if it is missing.
    static func allocatedBytes(_ path: String) -> Int64 {
        var info = stat()
        guard stat(path, &info) == 0 else { return 0 }
        return Int64(info.st_blocks) * 512
    }
}
