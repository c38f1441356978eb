import Foundation
import Libvirt
import Synchronization
import VMSessionContext
import VMSessionCore

/// Templates as libvirt 9.0 with QEMU 7.2 can start them warm: the prepared VM saved once with
/// `virDomainSave` (`memory.save`) beside a read-only copy of its disk (`disk.qcow2`), in
/// `<state>/templates/<name>/`. A session from it gets a qcow2 overlay on that disk and is started with
/// `virDomainRestore` after the save image's header was made to describe the session's own VM (see
/// ``SaveImageHeader`` for why the header and not `virDomainRestoreFlags`' XML).
///
/// The disk is kept as a backing chain (template disk → the image it was an overlay on, if any) rather than
/// flattened: making a template then copies only what the prepared session changed (megabytes, not the
/// whole image), and every session pays only its own changes.
extension LibvirtHypervisor {
    static let templateMemory = "memory.save"
    static let templateDisk = "disk.qcow2"
    static let templateHeader = "header"
    /// The lock restores from templates take while they put their own header in the shared memory image and
    /// libvirt reads it (a blocking call on libvirt's queue; never held across an await).
    static let templateRestoreLock = Mutex<Void>(())

    func templateDirectory(_ name: String) -> String { "\(configuration.stateDirectory)/templates/\(name)" }

    public func hasSeed(_ id: SessionID) -> Bool {
        FileManager.default.fileExists(atPath: seedPath(for: id))
    }

    public func replaceSeed(_ seed: ContextSeed, for id: SessionID) async throws(VMSessionError) {
        try await SeedImage.write(seed, to: seedPath(for: id), scratch: machineDirectory(for: id) + "/seed")
    }

    /// An empty `DIRECTORY.partial` (0700) where a template is made before it is moved into place, so that a
    /// template cut short is never taken for a whole one; a leftover of an earlier attempt is removed first.
    static func freshPartialDirectory(for directory: String) throws(VMSessionError) -> String {
        let partial = directory + ".partial"
        try? FileManager.default.removeItem(atPath: partial)
        do {
            try FileManager.default.createDirectory(atPath: partial, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw VMSessionError(.ioError, "Cannot create the template's directory \(partial).", cause: error)
        }
        return partial
    }

    public func captureTemplate(_ name: String, of id: SessionID) async throws(VMSessionError) -> Int64 {
        try VMTemplate.validate(name: name)
        let directory = templateDirectory(name)
        let partial = try LibvirtHypervisor.freshPartialDirectory(for: directory)
        let manager = FileManager.default
        let memory = partial + "/" + Self.templateMemory
        // 1. The memory: the VM stops here, its disk quiet from now on.
        try await call("save the VM's memory for template '\(name)'") { connection in
            guard let domain = try connection.domain(named: id.machineName) else {
                throw VMSessionError(.notFound, "Could not make a template: the VM \(id.machineName) is not defined.")
            }
            try domain.save(to: memory)
        }
        network?.down(id)
        do {
            // 2. The disk as it was when the memory was saved: read-only from now on.
            let disk = partial + "/" + Self.templateDisk
            try manager.copyItem(atPath: machineDirectory(for: id) + "/disk.qcow2", toPath: disk)
            try manager.setAttributes([.posixPermissions: 0o400], ofItemAtPath: disk)
            // 3. The pristine header: each session's restore writes its own over the shared image's, from this.
            let header = try Self.readHeader(memory)
            try Data(try header.encoded()).write(to: URL(fileURLWithPath: partial + "/" + Self.templateHeader))
        } catch {
            await bringBack(id, from: memory)
            try? manager.removeItem(atPath: partial)
            if let error = error as? VMSessionError { throw error }
            throw VMSessionError(.ioError, "Cannot keep the template's disk.", cause: error)
        }
        try? manager.removeItem(atPath: directory)
        do {
            try manager.moveItem(atPath: partial, toPath: directory)
        } catch {
            await bringBack(id, from: memory)
            throw VMSessionError(.ioError, "Cannot keep template '\(name)' in \(directory).", cause: error)
        }
        // 4. The prepared session runs on, from the same memory (its own header, its own disk).
        try await restoreSaved(id, from: directory + "/" + Self.templateMemory, header: nil)
        return Self.allocatedBytes(directory + "/" + Self.templateMemory) + Self.allocatedBytes(directory + "/" + Self.templateDisk)
    }

    /// Brings the VM whose memory was just saved back, after making the template failed (best effort: a VM
    /// that does not come back is seen as stopped by the manager).
    private func bringBack(_ id: SessionID, from memory: String) async {
        do {
            try await restoreSaved(id, from: memory, header: nil)
        } catch {
            logger.error("the VM could not be brought back after a failed template", metadata: ["session": "\(id)", "error": "\(error)"])
        }
    }

    public func defineFromTemplate(_ name: String, for spec: MachineSpec, source: SessionID) async throws(VMSessionError) {
        var times = StepTimes()
        let template = templateDirectory(name)
        let directory = machineDirectory(for: spec.id)
        let diskPath = directory + "/disk.qcow2"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw VMSessionError(.ioError, "Cannot create the VM directory \(directory).", cause: error)
        }
        if let network, let egress = spec.egress {
            _ = try prepareSocket(network.directory(spec.id))
            try network.prepare(spec.id, policy: egress)
        }
        for socket in [consoleSocketPath(for: spec.id), displaySocketPath(for: spec.id), seedSignalSocketPath(for: spec.id)] {
            _ = try prepareSocket(socket)
        }
        // Independent of each other, so side by side: the disk, the seed, and the guest's network, which comes
        // up here rather than at `start` (the restore needs it before QEMU runs, and it is most of a warm
        // start's own work: see the README's Templates). An open session from a template holds its network
        // helpers until it starts or closes; a daemon restart takes them down and the start brings them up.
        async let disk = StepTimes.timed { () async throws(VMSessionError) in
            // A fresh overlay: the session sees the template's disk and writes only to its own file.
            try? FileManager.default.removeItem(atPath: diskPath)
            let base = template + "/" + Self.templateDisk
            let bytes = max(Int64(spec.diskMiB) << 20, try await DiskImageInspector.virtualSize(base))
            try await ExternalCommand.run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", diskPath, "\(bytes)"])
        }
        // A seed is always there (the VM's XML has the template's seed drive): a first start that was cut short
        // before writing its own must not leave a later cold boot without one.
        async let seed = StepTimes.timed { () async throws(VMSessionError) in
            if let seed = spec.seed { try await self.replaceSeed(seed, for: spec.id) }
        }
        async let networkUp = StepTimes.timed { () async throws(VMSessionError) in
            if spec.egress != nil { try await self.network?.up(spec.id) }
        }
        let xml: String
        do {
            xml = try await sessionXML(name, for: spec, source: source)
        } catch {
            _ = await (disk, seed, networkUp)
            network?.down(spec.id)
            throw error
        }
        times.lap("xml")
        let results = await (disk: disk, seed: seed, network: networkUp)
        do {
            times.record("disk", try results.disk.get())
            times.record("seed", try results.seed.get())
            times.record("network", try results.network.get())
            try await call("define the VM from template '\(name)'") { connection in _ = try connection.defineDomain(xml: xml) }
        } catch {
            network?.down(spec.id)
            throw error
        }
        times.lap("define")
        logger.debug("opened from a template", metadata: times.metadata(["session": "\(spec.id)", "template": "\(name)"]))
    }

    public func restoreTemplate(_ name: String, for spec: MachineSpec, source: SessionID) async throws(VMSessionError) {
        var times = StepTimes()
        guard let seed = spec.seed else {
            throw VMSessionError(.internalError, "A start from a template needs the session's seed (its user-data, or an empty one).")
        }
        // Side by side: the session's seed (where the template's was: the guest finds the new one there after
        // the restore), its network (normally up since `open`, then this only looks), and the header's XML.
        async let seedWritten = StepTimes.timed { () async throws(VMSessionError) in
            try await self.replaceSeed(seed, for: spec.id)
        }
        async let networkUp = StepTimes.timed { () async throws(VMSessionError) in try await self.network?.up(spec.id) }
        let header: SaveImageHeader
        do {
            header = try Self.sessionHeader(header: templateDirectory(name) + "/" + Self.templateHeader, for: spec, source: source)
        } catch {
            _ = await (seedWritten, networkUp)
            throw error
        }
        times.lap("header")
        let results = await (seed: seedWritten, network: networkUp)
        times.record("seed", try results.seed.get())
        times.record("network", try results.network.get())
        times.lap("waited")
        try await restoreSaved(spec.id, from: templateDirectory(name) + "/" + Self.templateMemory, header: header, times: &times)
        // The guest blocks on its signal port rather than polling its seed drive: tell it.
        let signalled = await signalSeed(spec.id)
        times.lap("signal")
        logger.debug(
            "started warm from a template",
            metadata: times.metadata(["session": "\(spec.id)", "template": "\(name)", "signalled": "\(signalled)"]))
    }

    public func removeTemplate(_ name: String) async throws(VMSessionError) {
        try VMTemplate.validate(name: name)
        try Self.removeTemplateDirectory(templateDirectory(name))
    }

    /// Deletes a template's directory and what a capture cut short left beside it (`.partial`); local files on
    /// either hypervisor (the remote one keeps only the header here).
    static func removeTemplateDirectory(_ directory: String) throws(VMSessionError) {
        for path in [directory, directory + ".partial"] where FileManager.default.fileExists(atPath: path) {
            do {
                try FileManager.default.removeItem(atPath: path)
            } catch {
                throw VMSessionError(.deletionFailed, "Could not delete the template's files in \(path).", cause: error)
            }
        }
    }

    public func templateNames() async -> [String] {
        let root = "\(configuration.stateDirectory)/templates"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.filter { !$0.hasSuffix(".partial") && FileManager.default.fileExists(atPath: "\(root)/\($0)/\(Self.templateHeader)") }.sorted()
    }

    /// The template's saved XML, made into the session's (see ``TemplateDomainXML``).
    private func sessionXML(_ name: String, for spec: MachineSpec, source: SessionID) async throws(VMSessionError) -> String {
        try Self.sessionXML(header: templateDirectory(name) + "/" + Self.templateHeader, for: spec, source: source)
    }

    /// The XML saved in the template header file at `path`, made into the session's (see ``TemplateDomainXML``).
    static func sessionXML(header path: String, for spec: MachineSpec, source: SessionID) throws(VMSessionError) -> String {
        try sessionHeader(header: path, for: spec, source: source).xml
    }

    /// The template header file at `path` with its XML made into the session's: what the session's restore writes
    /// over the template's image.
    static func sessionHeader(header path: String, for spec: MachineSpec, source: SessionID) throws(VMSessionError) -> SaveImageHeader {
        var header = try readHeader(path)
        header.xml = try TemplateDomainXML.retarget(header.xml, from: source, to: spec.id, sessionName: spec.sessionName)
        return header
    }

    /// Restores the VM of `id` from the save image at `path`, running; with `header`, after writing it over the
    /// image's own (under ``templateRestoreLock``, so that concurrent restores each read their own).
    private func restoreSaved(_ id: SessionID, from path: String, header: SaveImageHeader?) async throws(VMSessionError) {
        var times = StepTimes()
        try await restoreSaved(id, from: path, header: header, times: &times)
    }

    private func restoreSaved(_ id: SessionID, from path: String, header: SaveImageHeader?, times: inout StepTimes) async throws(VMSessionError) {
        await releaseCap(id)
        starting.insert(id)
        defer { starting.remove(id) }
        try await network?.up(id)
        times.lap("networkCheck")
        let bytes = try header?.encoded()
        do {
            // Only the header is written (in place, ``SaveImageHeader/size`` + its padded XML); the memory
            // stream after it is never read or copied by the daemon.
            let written: (Duration, Duration) = try await call("restore the VM from \(path)") { connection in
                try Self.templateRestoreLock.withLock { _ in
                    let clock = ContinuousClock()
                    let start = clock.now
                    if let bytes {
                        guard let handle = FileHandle(forUpdatingAtPath: path) else {
                            throw VMSessionError(.ioError, "Cannot open the template's memory image \(path).")
                        }
                        defer { try? handle.close() }
                        try handle.seek(toOffset: 0)
                        try handle.write(contentsOf: bytes)
                    }
                    let headerWritten = clock.now
                    try connection.restoreDomain(from: path)
                    return (start.duration(to: headerWritten), headerWritten.duration(to: clock.now))
                }
            }
            times.record("headerWrite", written.0)
            times.record("libvirtRestore", written.1)
            times.lap("restore")
        } catch {
            await releaseNetworkAfterFailedStart(id)
            throw error
        }
    }

    static func readHeader(_ path: String) throws(VMSessionError) -> SaveImageHeader {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw VMSessionError(.notFound, "The template's file \(path) is missing.")
        }
        defer { try? handle.close() }
        // Read in order from the start: the offsets asked for are where the handle already is.
        let bytes: [UInt8]
        do {
            bytes = try SaveImageHeader.headerBytes(of: path) { _, length in [UInt8]((try? handle.read(upToCount: length)) ?? Data()) }
        } catch let error as VMSessionError {
            throw error
        } catch {
            throw VMSessionError(.ioError, "Cannot read the save image \(path).", cause: error)
        }
        return try SaveImageHeader(parsing: bytes)
    }
}
