import Foundation
import Libvirt
import VMSessionContext
import VMSessionCore

/// Snapshots on a remote host, as on the local one (see ``LibvirtCaller/snapshotXML(_:hasSeed:)``): internal
/// qcow2 snapshots with the VM's state, taken, reverted and deleted through libvirt's API over the host's
/// connection. The session's disk there is its qcow2 volume in the daemon's pool (``RemoteVolumes``), so the
/// snapshot lives inside that volume and goes with it; libvirt keeps the snapshots' metadata in the host's own
/// state, so they outlive the daemon, and `undefine` (at close) drops it. What a snapshot takes is measured as the
/// local one is: what the disk takes on the host after, less before (the volume's allocation, as libvirt reports it).
extension RemoteLibvirtHypervisor {
    public func createSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) -> Int64 {
        try VMSnapshot.validate(name: name)
        let storage = storage
        let before = try await storage.run("read the VM's disk") { try storage.disk(of: id) }
        guard before.format == "qcow2" else {
            throw VMSessionError(
                .notSupported, "The VM's disk on remote host \(host.name) is \(before.format ?? "of no known format"), not qcow2, which snapshots with memory need.")
        }
        try await takeSnapshot(name, of: id, hasSeed: hasSeed(id))
        let after = try await storage.run("read the VM's disk") { try storage.disk(of: id) }
        return max(0, after.allocation - before.allocation)
    }

    /// Reverts inside the VM's running QEMU on the host (QEMU's `loadvm` through libvirt's monitor passthrough,
    /// which the remote protocol carries): the console's stream and the display's forward stay connected. Where
    /// that is refused, libvirt's own revert starts a new QEMU there, whose console and display are brought home
    /// again as after a start.
    public func revertToSnapshot(_ name: String, of id: SessionID, paused: Bool) async throws(VMSessionError) {
        if try await revertedInPlace(name, of: id, paused: paused, logger: logger) { return }
        // libvirt's revert stops the VM's QEMU and starts a new one: that "stopped" must not take the network down.
        await networkTurns.beginStart(id)
        defer { networkTurns.endStart(id) }
        relay.detach(id)
        await stopForwardingDisplay(id)
        do {
            try await revertByRestart(name, of: id, paused: paused)
        } catch {
            await bringHome(id)
            throw error
        }
        await bringHome(id)
    }

    public func deleteSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) {
        try await removeSnapshot(name, of: id)
    }

    public func snapshotNames(of id: SessionID) async throws(VMSessionError) -> [String] {
        try await domainSnapshotNames(of: id)
    }

    // MARK: Seeds

    public func hasSeed(_ id: SessionID) -> Bool { seeded.withLock { $0.contains(id) } }

    /// Writes `seed` into the session's seed volume on the host (the same padded size, so a restored guest finds
    /// it where the template's was).
    public func replaceSeed(_ seed: ContextSeed, for id: SessionID) async throws(VMSessionError) {
        guard let local = try await writeLocalSeed(seed, for: id) else { return }
        defer { try? FileManager.default.removeItem(atPath: local) }
        let storage = storage
        _ = try await storage.run("send the VM's seed") { try storage.putSeed(id, from: local) }
        seeded.withLock { _ = $0.insert(id) }
    }
}
