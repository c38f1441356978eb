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
        // The session's own disk is always qcow2 (see DomainXML); only qcow2 holds internal snapshots with the
        // VM's state (its magic: "QFI\u{FB}").
        let magic = FileHandle(forReadingAtPath: diskPath).flatMap { try? $0.read(upToCount: 4) }
        guard magic == Data([0x51, 0x46, 0x49, 0xFB]) else {
            throw VMSessionError(.notSupported, "The VM's disk \(diskPath) is not qcow2, which snapshots with memory need.")
        }
        let before = Self.allocatedBytes(diskPath)
        try await takeSnapshot(name, of: id, hasSeed: FileManager.default.fileExists(atPath: seedPath(for: id)))
        return max(0, Self.allocatedBytes(diskPath) - before)
    }

    /// Reverts inside the VM's running QEMU (see ``revertInPlace(_:of:paused:)``). Where that is refused (a
    /// driver with no QEMU monitor, or QEMU's `loadvm` failed), libvirt's own revert starts a new QEMU from the
    /// snapshot.
    public func revertToSnapshot(_ name: String, of id: SessionID, paused: Bool) async throws(VMSessionError) {
        if description.driver == "QEMU", try await revertedInPlace(name, of: id, paused: paused, logger: logger) { return }
        // libvirt 9.0 reverts by starting a new QEMU from the snapshot: its "stopped" event must not take the
        // guest's network down, and the new process connects to the network as a start's does.
        starting.insert(id)
        defer { starting.remove(id) }
        try await network?.up(id)
        try await revertByRestart(name, of: id, paused: paused)
    }

    public func deleteSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) {
        try await removeSnapshot(name, of: id)
    }

    public func snapshotNames(of id: SessionID) async throws(VMSessionError) -> [String] {
        try await domainSnapshotNames(of: id)
    }

    /// What a file takes on disk (its allocated blocks), 0 if it is missing.
    static func allocatedBytes(_ path: String) -> Int64 {
        var info = stat()
        guard stat(path, &info) == 0 else { return 0 }
        return Int64(info.st_blocks) * 512
    }
}
