import Foundation
import Libvirt
import VMSessionContext
import VMSessionCore

/// Templates on a remote host: a template made from a session on host H stays on H. Its memory image (saved with
/// `virDomainSave` into a volume of the daemon's pool there) and its disk (a copy of the prepared session's disk,
/// made on H by libvirt) are volumes on H (``RemoteVolumes``); the daemon keeps only the save image's header
/// (`<state>/hosts/<host>/templates/<name>/header`: the saved VM's XML, some kilobytes) to make each warm session's.
///
/// A session from it runs on H only (the daemon's placement sends it there): its disk is a qcow2 overlay volume on
/// the template's disk, its seed volume holds its own user-data, and its start writes the session's own header
/// over the template's image in place (libvirt's upload with an offset: only the header crosses the connection)
/// and restores from it, as the local host does with a file (see ``SaveImageHeader`` for why the header). Both run
/// in one step on the host connection's queue, so no other restore writes its header in between.
///
/// The guest finds its new seed by its own look at the seed drive (every 0.2 s when the VM has no seed-signal
/// port, as a remote VM has not: that port is a Unix socket of the daemon's machine on the local host).
extension RemoteLibvirtHypervisor {
    static let templateHeader = "header"

    func templateDirectory(_ name: String) -> String { stateDirectory + "/templates/" + name }

    /// The saved VMs' XML of every template kept for this host (they name the bases the templates need).
    func templateXMLs(excluding excluded: String? = nil) -> [String] {
        let root = stateDirectory + "/templates"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.filter { !$0.hasSuffix(".partial") && $0 != excluded }.compactMap { name in
            try? LibvirtHypervisor.readHeader(root + "/" + name + "/" + Self.templateHeader).xml
        }
    }

    public func captureTemplate(_ name: String, of id: SessionID) async throws(VMSessionError) -> Int64 {
        try VMTemplate.validate(name: name)
        let directory = templateDirectory(name)
        let partial = try LibvirtHypervisor.freshPartialDirectory(for: directory)
        let manager = FileManager.default
        // The save's "stopped" event must not take the network down under the VM restored at once.
        await networkTurns.beginStart(id)
        defer { networkTurns.endStart(id) }
        // The VM's QEMU stops with the save (and a new one restores it): its console and display come home again after.
        relay.detach(id)
        await stopForwardingDisplay(id)
        let storage = storage
        let header: [UInt8]
        do {
            header = try await storage.run("save the VM as template '\(name)'") { try storage.saveTemplate(name, of: id) }
        } catch {
            await bringHome(id)
            try? manager.removeItem(atPath: partial)
            throw error
        }
        await bringHome(id)
        do {
            try Data(header).write(to: URL(fileURLWithPath: partial + "/" + Self.templateHeader))
            try? manager.removeItem(atPath: directory)
            try manager.moveItem(atPath: partial, toPath: directory)
        } catch {
            try? manager.removeItem(atPath: partial)
            _ = try? await storage.run("delete template '\(name)'") { try storage.removeTemplate(name) }
            throw VMSessionError(.ioError, "Cannot keep template '\(name)' in \(directory).", cause: error)
        }
        return try await storage.run("measure template '\(name)'") {
            var bytes: Int64 = 0
            for volume in [RemoteVolumes.templateMemoryName(name), RemoteVolumes.templateDiskName(name)] {
                bytes += Int64(try storage.pool.volume(named: volume)?.info().allocation ?? 0)
            }
            return bytes
        }
    }

    public func defineFromTemplate(_ name: String, for spec: MachineSpec, source: SessionID) async throws(VMSessionError) {
        var times = StepTimes()
        let xml = try sessionXML(name, for: spec, source: source)
        let directory = machineDirectory(for: spec.id)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw VMSessionError(.ioError, "Cannot create the VM directory \(directory).", cause: error)
        }
        // The session's own network on the host: the template's NIC (retargeted with the rest of the XML) names
        // the session's net.sock there.
        if let egress = spec.egress { _ = try network?.prepare(spec.id, policy: egress) }
        // A seed is always there (the VM's XML has the template's seed drive): a first start cut short before
        // writing its own must not leave a later cold boot without one.
        let localSeed = try await writeLocalSeed(spec.seed, for: spec.id)
        defer { if let localSeed { try? FileManager.default.removeItem(atPath: localSeed) } }
        times.lap("local")
        let storage = storage
        let connection = connection
        let seedToSend = localSeed
        let capacity = UInt64(spec.diskMiB) << 20
        try await storage.run("define the VM from template '\(name)'") {
            _ = try storage.overlayDisk(spec.id, onTemplate: name, capacity: capacity)
            if let seedToSend { _ = try storage.putSeed(spec.id, from: seedToSend) }
            _ = try connection.defineDomain(xml: xml)
        }
        if localSeed != nil { seeded.withLock { _ = $0.insert(spec.id) } }
        times.lap("host")
        logger.debug("opened from a template", metadata: times.metadata(["session": "\(spec.id)", "template": "\(name)"]))
    }

    public func restoreTemplate(_ name: String, for spec: MachineSpec, source: SessionID) async throws(VMSessionError) {
        var times = StepTimes()
        guard let seed = spec.seed else {
            throw VMSessionError(.internalError, "A start from a template needs the session's seed (its user-data, or an empty one).")
        }
        let bytes = try LibvirtHypervisor.sessionHeader(header: templateDirectory(name) + "/" + Self.templateHeader, for: spec, source: source)
            .encoded()
        await networkTurns.beginStart(spec.id)
        defer { networkTurns.endStart(spec.id) }
        try await replaceSeed(seed, for: spec.id)
        times.lap("seed")
        // The network first: the restored QEMU connects to it at once.
        try await network?.up(spec.id)
        times.lap("network")
        let storage = storage
        do {
            try await storage.run("restore the VM from template '\(name)'") { try storage.restoreTemplate(name, header: bytes) }
        } catch {
            await network?.down(spec.id)
            throw error
        }
        times.lap("restore")
        await bringHome(spec.id)
        times.lap("home")
        logger.debug("started warm from a template", metadata: times.metadata(["session": "\(spec.id)", "template": "\(name)"]))
    }

    /// Deletes template `name`'s volumes on the host (and the bases only it still named), and its header here.
    public func removeTemplate(_ name: String) async throws(VMSessionError) {
        try VMTemplate.validate(name: name)
        let storage = storage
        let others = templateXMLs(excluding: name)
        let deleted = try await storage.run("delete template '\(name)'") {
            try storage.removeTemplate(name) + (try storage.collectUnusedBases(templates: others))
        }
        logger.debug("template volumes deleted", metadata: ["template": "\(name)", "volumes": "\(deleted)"])
        try LibvirtHypervisor.removeTemplateDirectory(templateDirectory(name))
    }

    /// The templates whose volumes on the host are complete and whose header the daemon keeps.
    public func templateNames() async -> [String] {
        let storage = storage
        guard let complete = try? await storage.run("list the templates", { RemoteVolumes.completeTemplates(volumes: try storage.volumeNames()) })
        else { return [] }
        return complete.filter(keepsHeader)
    }

    /// Whether the daemon keeps template `name`'s header here (a capture writes it last, once the host has the rest).
    func keepsHeader(_ name: String) -> Bool {
        FileManager.default.fileExists(atPath: templateDirectory(name) + "/" + Self.templateHeader)
    }

    /// Deletes what a capture cut short left on the host (``RemoteVolumes/unfinishedTemplates(volumes:kept:)``) and its
    /// local leftovers, so that a template there is whole or absent. Called when the host connects (before any call
    /// of a session is routed here, so no capture of this connection is under way; one on a lost connection failed).
    func removeUnfinishedTemplates() async {
        let storage = storage
        do throws(VMSessionError) {
            let removed = try await storage.run("delete unfinished templates") {
                let volumes = try storage.volumeNames()
                let kept = Set(RemoteVolumes.completeTemplates(volumes: volumes).filter(self.keepsHeader))
                let unfinished = RemoteVolumes.unfinishedTemplates(volumes: volumes, kept: kept)
                for name in unfinished { _ = try storage.removeTemplate(name) }
                return unfinished
            }
            for name in removed {
                try? FileManager.default.removeItem(atPath: templateDirectory(name) + ".partial")
                logger.notice("removed a template a capture cut short left on the host", metadata: ["template": "\(name)"])
            }
        } catch {
            logger.warning("cannot look for unfinished templates on the host", metadata: ["error": "\(error)"])
        }
    }

    /// The template's saved XML, made into the session's (see ``TemplateDomainXML``).
    private func sessionXML(_ name: String, for spec: MachineSpec, source: SessionID) throws(VMSessionError) -> String {
        try LibvirtHypervisor.sessionXML(header: templateDirectory(name) + "/" + Self.templateHeader, for: spec, source: source)
    }
}
