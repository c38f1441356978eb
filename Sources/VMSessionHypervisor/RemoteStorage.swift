import Foundation
import Libvirt
import Synchronization
import VMSessionCore

/// A remote host's storage as the daemon uses it: one pool (``RemoteVolumes/poolName``) on the host, base
/// volumes uploaded once per content, each session's disk and seed as volumes, and the collection of bases no
/// session uses any more. Files reach the host only through libvirt (volumes filled by streams over the
/// connection): no shared file system is assumed.
///
/// Which pool: the host's pool named `vmsessiond` when there is one (the admin's choice of place: any pool
/// type whose volumes are files, e.g. `virsh -c URI pool-define-as vmsessiond dir --target DIR`, `pool-build`,
/// `pool-start`, `pool-autostart`); else, on a system libvirt, the daemon defines it as a directory pool at
/// ``RemoteVolumes/systemPoolPath`` (a path the daemon can know, and that root's QEMU can read). A session
/// libvirt (`…/session`) runs as a user whose home the daemon cannot learn through libvirt, so there the
/// admin's pool is required and its absence is a plain `not_supported` error naming the commands to run.
///
/// Every method blocks (libvirt calls, uploads): they run on the host connection's one serial queue (see
/// ``run(_:_:)`` and ``HostConnection``), so a base is never deleted between a define's check that it is there
/// and the definition that names it, one upload of a base is ever in flight per host, and no other call on the
/// connection runs during a step (an upload holds the host's other calls until it is done).
final class RemoteStorage: Sendable {
    let connection: Connection
    let pool: StoragePool
    private let queue: DispatchQueue
    /// SHA-256 digests of local files, by path, size and modification time: a kernel or disk image is hashed
    /// once per daemon run, not once per session.
    private let digests = Mutex<[String: String]>([:])

    /// Blocks on libvirt calls: run it on `queue`, the connection's.
    init(connection: Connection, uri: String, queue: DispatchQueue) throws(VMSessionError) {
        self.connection = connection
        self.queue = queue
        do {
            if let pool = try connection.storagePool(named: RemoteVolumes.poolName) {
                if !pool.isActive {
                    do {
                        try pool.start()
                    } catch {
                        // Its directory is gone (removed since, or never built): building makes it again (a
                        // directory pool's build is a mkdir), and a pool that cannot be built says why.
                        try pool.build()
                        try pool.start()
                    }
                }
                self.pool = pool
                return
            }
            guard Self.isSystemURI(uri) else {
                throw VMSessionError(
                    .notSupported,
                    "The remote host \(uri) has no storage pool '\(RemoteVolumes.poolName)' and is a session libvirt, whose "
                        + "home the daemon cannot learn: define one there (virsh -c '\(uri)' pool-define-as \(RemoteVolumes.poolName) "
                        + "dir --target DIR; pool-build, pool-start and pool-autostart \(RemoteVolumes.poolName)).")
            }
            let pool = try connection.defineStoragePool(xml: """
                <pool type='dir'><name>\(RemoteVolumes.poolName)</name>\
                <target><path>\(RemoteVolumes.systemPoolPath)</path></target></pool>
                """)
            do {
                try pool.build()
                try pool.start()
            } catch {
                // Not left half made: the next connection defines it again.
                try? pool.undefine()
                throw error
            }
            self.pool = pool
        } catch let error as VMSessionError {
            throw error
        } catch let error as LibvirtError {
            throw VMSessionError(.hypervisorError, "Cannot set up the storage pool on \(uri): \(error.message)", cause: error)
        } catch {
            throw VMSessionError(.hypervisorError, "Cannot set up the storage pool on \(uri).", cause: error)
        }
    }

    static func isSystemURI(_ uri: String) -> Bool { URLComponents(string: uri)?.path == "/system" }

    /// Runs `body` on the connection's queue, off the cooperative pool; libvirt's errors become ours.
    func run<T: Sendable>(_ what: String, _ body: @escaping @Sendable () throws -> T) async throws(VMSessionError) -> T {
        let result: Result<T, any Error> = await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: Result { try body() }) }
        }
        switch result {
        case .success(let value): return value
        case .failure(let error as VMSessionError): throw error
        case .failure(let error as LibvirtError):
            throw VMSessionError(.hypervisorError, "Could not \(what) on the remote host: \(error.message)", cause: error)
        case .failure(let error): throw VMSessionError(.hypervisorError, "Could not \(what) on the remote host.", cause: error)
        }
    }

    /// The SHA-256 of a local file (cached by path, size and modification time).
    func digest(of path: String) async throws(VMSessionError) -> String {
        var info = stat()
        guard stat(path, &info) == 0 else { throw VMSessionError(.ioError, "Cannot read \(path) to send it to a remote host.") }
        let key = "\(path)\u{0}\(info.st_size)\u{0}\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
        if let known = digests.withLock({ $0[key] }) { return known }
        let output = try await ExternalCommand.output(of: "sha256sum", ["--", path])
        let digest = String(output.prefix(64))
        guard RemoteVolumes.isDigest(digest) else { throw VMSessionError(.ioError, "sha256sum gave no digest for \(path).") }
        digests.withLock { $0[key] = digest }
        return digest
    }

    // MARK: Blocking (on the storage queue)

    /// The host's path of the base volume holding `localPath` (whose digest is `digest`), uploaded if the host
    /// has no complete copy yet.
    func ensureBase(_ localPath: String, digest: String, role: RemoteVolumes.Role) throws -> String {
        let name = RemoteVolumes.baseName(digest: digest, role: role)
        let markerName = RemoteVolumes.markerName(ofBase: name)
        if let base = try pool.volume(named: name), try pool.volume(named: markerName) != nil { return try base.path() }
        // A base without its marker is an upload cut short: it is made again.
        try pool.volume(named: name)?.delete()
        var info = stat()
        guard stat(localPath, &info) == 0 else { throw VMSessionError(.ioError, "Cannot read \(localPath) to send it to a remote host.") }
        let volume = try pool.createVolume(xml: try RemoteVolumes.volumeXML(name: name, capacity: UInt64(info.st_size), format: "raw"))
        do {
            try volume.upload(contentsOf: localPath)
            _ = try pool.createVolume(xml: try RemoteVolumes.volumeXML(name: markerName, capacity: 0, format: "raw"))
        } catch {
            try? volume.delete()
            throw error
        }
        return try volume.path()
    }

    /// The host's path of the session's disk, made if missing: a blank qcow2 of `capacity` bytes, or an
    /// overlay on `backing`.
    func ensureDisk(_ id: SessionID, capacity: UInt64, backing: (path: String, format: String)?) throws -> String {
        if let disk = try pool.volume(named: RemoteVolumes.diskName(id)) { return try disk.path() }
        let xml = try RemoteVolumes.volumeXML(name: RemoteVolumes.diskName(id), capacity: capacity, format: "qcow2", backing: backing)
        return try pool.createVolume(xml: xml).path()
    }

    /// Puts the local seed image at `localPath` in the session's seed volume; returns its path on the host.
    func putSeed(_ id: SessionID, from localPath: String) throws -> String {
        let name = RemoteVolumes.seedName(id)
        let volume: StorageVolume
        if let existing = try pool.volume(named: name) {
            volume = existing
        } else {
            volume = try pool.createVolume(xml: try RemoteVolumes.volumeXML(name: name, capacity: UInt64(SeedImage.paddedBytes), format: "raw"))
        }
        try volume.upload(contentsOf: localPath)
        return try volume.path()
    }

    func removeSeed(_ id: SessionID) throws {
        try pool.volume(named: RemoteVolumes.seedName(id))?.delete()
    }

    /// Deletes the session's volumes, then every base no domain, no overlay and none of `templates` (the XML of the
    /// templates' saved VMs on this host) names any more. Returns the names of the volumes deleted.
    @discardableResult
    func removeVolumes(of id: SessionID, templates: [String] = []) throws -> [String] {
        var deleted: [String] = []
        for volume in try pool.allVolumes() where RemoteVolumes.belongs(volume.name, to: id) {
            try volume.delete()
            deleted.append(volume.name)
        }
        return deleted + (try collectUnusedBases(templates: templates))
    }

    /// Deletes the bases (and markers) that nothing on the host uses (see ``RemoteVolumes/unusedBases``); `templates`
    /// are the XML of the templates' saved VMs, which name bases too.
    func collectUnusedBases(templates: [String] = []) throws -> [String] {
        let volumes = try pool.allVolumes()
        var paths: [String: String] = [:]
        var references: [String] = templates
        for volume in volumes {
            paths[volume.name] = try volume.path()
            if !volume.name.hasPrefix("base-") { references.append(try volume.xmlDescription()) }
        }
        for domain in try connection.allDomains() { references.append(try domain.xmlDescription()) }
        let doomed = RemoteVolumes.unusedBases(volumes: paths, references: references)
        for volume in volumes where doomed.contains(volume.name) { try volume.delete() }
        return doomed
    }

    /// The session's disk volume: its format (what its XML says) and the bytes it takes on the host.
    func disk(of id: SessionID) throws -> (format: String?, allocation: Int64) {
        guard let disk = try pool.volume(named: RemoteVolumes.diskName(id)) else {
            throw VMSessionError(.notFound, "The VM \(id.machineName) has no disk on the remote host.")
        }
        let xml = try disk.xmlDescription()
        var format: String?
        if let target = xml.range(of: "<target>"), let start = xml.range(of: "<format type='", range: target.upperBound..<xml.endIndex) {
            format = String(xml[start.upperBound...].prefix { $0 != "'" })
        }
        return (format, Int64(try disk.info().allocation))
    }

    /// The sessions whose seed volume is on the host (they were started with user-data).
    func seededSessions() throws -> Set<SessionID> {
        Set(try pool.allVolumes().compactMap { volume in
            let name = volume.name
            guard name.hasPrefix("vms-"), name.hasSuffix(".seed.iso") else { return nil }
            return SessionID(machineName: String(name.dropLast(".seed.iso".count)))
        })
    }

    // MARK: Templates (blocking, on the storage queue)

    /// Saves the running VM of `id` as template `name` on the host: its memory (`virDomainSave` into the template's
    /// memory volume, which stops the VM), a copy of its disk made on the host, then the marker; and brings the VM
    /// back running from that memory (its own header, its own disk). Returns the save image's header (its XML,
    /// which the daemon keeps to make each warm session's). Leaves no template volume if it fails; the VM is
    /// brought back if its memory was saved.
    func saveTemplate(_ name: String, of id: SessionID) throws -> [UInt8] {
        try removeTemplate(name)
        guard let domain = try connection.domain(named: id.machineName) else {
            throw VMSessionError(.notFound, "Could not make a template: the VM \(id.machineName) is not defined.")
        }
        guard let disk = try pool.volume(named: RemoteVolumes.diskName(id)) else {
            throw VMSessionError(.notFound, "Could not make a template: the VM \(id.machineName) has no disk on the host.")
        }
        let memory = try pool.createVolume(
            xml: try RemoteVolumes.volumeXML(name: RemoteVolumes.templateMemoryName(name), capacity: 0, format: "raw"))
        let memoryPath = try memory.path()
        do {
            try domain.save(to: memoryPath)
        } catch {
            try? memory.delete()
            throw error
        }
        do {
            // The disk as it was when the memory was saved (the VM is stopped): copied on the host, never sent.
            let copy = try RemoteVolumes.volumeXML(name: RemoteVolumes.templateDiskName(name), capacity: try disk.info().capacity, format: "qcow2")
            _ = try pool.createVolume(xml: copy, from: disk)
            let header = try SaveImageHeader.headerBytes(of: "The template's memory image") { offset, length in
                try memory.bytes(at: offset, length: UInt64(length))
            }
            _ = try pool.createVolume(xml: try RemoteVolumes.volumeXML(name: RemoteVolumes.templateMarkerName(name), capacity: 0, format: "raw"))
            // The prepared session runs on from the same memory.
            try connection.restoreDomain(from: memoryPath)
            return header
        } catch {
            if (try? domain.state().isActive) != true { try? connection.restoreDomain(from: memoryPath) }
            _ = try? removeTemplate(name)
            throw error
        }
    }

    /// The host paths of template `name`'s memory image and disk; `not_found` unless the template is complete.
    func templatePaths(_ name: String) throws -> (memory: String, disk: String, diskCapacity: UInt64) {
        guard try pool.volume(named: RemoteVolumes.templateMarkerName(name)) != nil,
            let memory = try pool.volume(named: RemoteVolumes.templateMemoryName(name)),
            let disk = try pool.volume(named: RemoteVolumes.templateDiskName(name))
        else {
            throw VMSessionError(.notFound, "Template '\(name)' has no complete files on the remote host.")
        }
        return (try memory.path(), try disk.path(), try disk.info().capacity)
    }

    /// Makes the session's disk a fresh overlay on template `name`'s disk (any disk it had goes).
    func overlayDisk(_ id: SessionID, onTemplate name: String, capacity: UInt64) throws -> String {
        let template = try templatePaths(name)
        try pool.volume(named: RemoteVolumes.diskName(id))?.delete()
        return try ensureDisk(id, capacity: max(capacity, template.diskCapacity), backing: (template.disk, "qcow2"))
    }

    /// Starts the session's VM from template `name`'s memory with `header` (the session's own, same length as the
    /// template's) written over the image's in place: only the header crosses the connection.
    func restoreTemplate(_ name: String, header: [UInt8]) throws {
        guard let memory = try pool.volume(named: RemoteVolumes.templateMemoryName(name)),
            try pool.volume(named: RemoteVolumes.templateMarkerName(name)) != nil
        else {
            throw VMSessionError(.notFound, "Template '\(name)' has no complete files on the remote host.")
        }
        try memory.overwrite(header, at: 0)
        try connection.restoreDomain(from: try memory.path())
    }

    /// Deletes template `name`'s volumes (the marker first, so a half-deleted template never counts as complete).
    /// Returns their names.
    @discardableResult
    func removeTemplate(_ name: String) throws -> [String] {
        let ordered = [RemoteVolumes.templateMarkerName(name), RemoteVolumes.templateMemoryName(name), RemoteVolumes.templateDiskName(name)]
        var deleted: [String] = []
        for volumeName in ordered {
            guard let volume = try pool.volume(named: volumeName) else { continue }
            try volume.delete()
            deleted.append(volumeName)
        }
        return deleted
    }

    /// The names of the pool's volumes (for tests and logs).
    func volumeNames() throws -> [String] { try pool.allVolumes().map(\.name).sorted() }
}
