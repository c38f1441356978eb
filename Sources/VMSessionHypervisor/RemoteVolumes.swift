import VMSessionCore

/// How a remote host's storage pool is laid out, as pure decisions: the names of the volumes the daemon keeps
/// there and which base volumes no session needs any more. The blocking side is ``RemoteStorage``.
///
/// - A **base** volume holds a file every session of the same content shares (the appliance's kernel and
///   initrd, a disk image): `base-<sha256>.<role>`, uploaded once per content and host. It counts only once
///   its **marker** `base-<sha256>.<role>.complete` (empty) exists: an upload cut short (a daemon killed, a
///   host lost) leaves a base without a marker, which is uploaded again rather than booted from.
/// - A session's own volumes are `vms-<id>.disk.qcow2` (its disk: blank, or a qcow2 overlay on a base) and
///   `vms-<id>.seed.iso` (its contextualization), deleted with the session.
/// - A template made on the host keeps `tmpl-<name>.memory.save` (its saved memory: `virDomainSave`'s file),
///   `tmpl-<name>.disk.qcow2` (a copy of the prepared session's disk, the base of its warm sessions' overlays) and
///   `tmpl-<name>.complete` (empty, made last): deleted with the template.
enum RemoteVolumes {
    /// The pool the daemon keeps its volumes in, on every remote host.
    static let poolName = "vmsessiond"
    /// Where the daemon defines its pool on a host with a system libvirt (a knowable path, root's, beside
    /// libvirt's own `images`); a session libvirt needs the admin's pool (see ``RemoteStorage``).
    static let systemPoolPath = "/var/lib/libvirt/images/vmsessiond"
    static let markerSuffix = ".complete"

    /// What a base volume holds.
    enum Role: String, Sendable {
        case kernel, initrd, disk
    }

    static func baseName(digest: String, role: Role) -> String { "base-\(digest).\(role.rawValue)" }
    static func markerName(ofBase base: String) -> String { base + markerSuffix }
    static func diskName(_ id: SessionID) -> String { "\(id.machineName).disk.qcow2" }
    static func seedName(_ id: SessionID) -> String { "\(id.machineName).seed.iso" }

    static let templateMemorySuffix = ".memory.save"
    static let templateDiskSuffix = ".disk.qcow2"
    static func templateMemoryName(_ template: String) -> String { "tmpl-\(template)\(templateMemorySuffix)" }
    static func templateDiskName(_ template: String) -> String { "tmpl-\(template)\(templateDiskSuffix)" }
    static func templateMarkerName(_ template: String) -> String { "tmpl-\(template)\(markerSuffix)" }

    /// Whether `name` is one of template `template`'s volumes.
    static func belongs(_ name: String, toTemplate template: String) -> Bool {
        [templateMemoryName(template), templateDiskName(template), templateMarkerName(template)].contains(name)
    }

    /// The templates whose volumes are complete (their marker is there), by name.
    static func completeTemplates(volumes: [String]) -> [String] {
        let names = Set(volumes)
        return volumes.compactMap { volume -> String? in
            guard volume.hasPrefix("tmpl-"), volume.hasSuffix(markerSuffix) else { return nil }
            let template = String(volume.dropFirst("tmpl-".count).dropLast(markerSuffix.count))
            guard names.contains(templateMemoryName(template)), names.contains(templateDiskName(template)) else { return nil }
            return template
        }.sorted()
    }

    /// The templates that have volumes on the host but are not among `kept` (those complete there and whose header
    /// the daemon keeps): what a capture cut short left (a daemon killed during the save, or before it kept the
    /// header). By name, each once.
    static func unfinishedTemplates(volumes: [String], kept: Set<String>) -> [String] {
        let suffixes = [templateMemorySuffix, templateDiskSuffix, markerSuffix]
        let names = volumes.compactMap { volume -> String? in
            guard volume.hasPrefix("tmpl-"), let suffix = suffixes.first(where: { volume.hasSuffix($0) }) else { return nil }
            let name = String(volume.dropFirst("tmpl-".count).dropLast(suffix.count))
            return name.isEmpty ? nil : name
        }
        return Set(names).subtracting(kept).sorted()
    }

    /// Whether `name` is one of the session's own volumes.
    static func belongs(_ name: String, to id: SessionID) -> Bool {
        name == diskName(id) || name == seedName(id)
    }

    /// Whether a digest is one the daemon computed (lowercase hex SHA-256): nothing else goes into a name.
    static func isDigest(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// The base volumes (and their markers) to delete: those whose path no reference names. `volumes` maps
    /// each volume's name to its path on the host; `references` are the texts that can name a base: the
    /// XML of every domain still defined on the host (kernel, initrd), of every overlay volume still there
    /// (its backing store), and of every template's saved VM (its kernel and initrd: a warm session restored from
    /// it needs them though no domain names them meanwhile). A base is referenced when its path appears quoted or
    /// as element text.
    static func unusedBases(volumes: [String: String], references: [String]) -> [String] {
        var doomed: [String] = []
        for (name, path) in volumes where name.hasPrefix("base-") && !name.hasSuffix(markerSuffix) {
            let used = references.contains { text in
                ["'\(path)'", "\"\(path)\"", ">\(path)<"].contains { text.contains($0) }
            }
            guard !used else { continue }
            doomed.append(name)
            let marker = markerName(ofBase: name)
            if volumes[marker] != nil { doomed.append(marker) }
        }
        // A marker whose base is gone marks nothing.
        for name in volumes.keys where name.hasPrefix("base-") && name.hasSuffix(markerSuffix) {
            if volumes[String(name.dropLast(markerSuffix.count))] == nil { doomed.append(name) }
        }
        return doomed.sorted()
    }

    /// The XML of a volume the daemon makes: raw for a file uploaded as it is (a base, a seed), qcow2 for a
    /// session's disk, optionally an overlay on `backing` (a base's path on the host and its format).
    static func volumeXML(name: String, capacity: UInt64, format: String, backing: (path: String, format: String)? = nil)
        throws(VMSessionError) -> String
    {
        guard Identifier.isValid(name, maxLength: 128), ["raw", "qcow2"].contains(format) else {
            throw VMSessionError(.invalidArgument, "'\(name)' (\(format)) cannot be a volume of the daemon's.")
        }
        var backingXML = ""
        if let backing {
            try DomainXML.checkPath(backing.path)
            guard ["raw", "qcow2"].contains(backing.format) else {
                throw VMSessionError(.invalidArgument, "A base image's format must be raw or qcow2, not '\(backing.format)'.")
            }
            backingXML = "<backingStore><path>\(DomainXML.escape(backing.path))</path><format type='\(backing.format)'/></backingStore>"
        }
        return "<volume><name>\(name)</name><capacity unit='bytes'>\(capacity)</capacity>"
            + "<target><format type='\(format)'/></target>\(backingXML)</volume>"
    }

    /// The display socket libvirt chose for a running VM (`<listen type='socket' socket='…'/>` in its live XML).
    static func displaySocket(inDomainXML xml: String) -> String? {
        guard let graphics = xml.range(of: "<graphics type='vnc'"), let end = xml.range(of: "</graphics>", range: graphics.upperBound..<xml.endIndex)
        else { return nil }
        let element = xml[graphics.lowerBound..<end.lowerBound]
        guard let socket = element.range(of: "socket='") else { return nil }
        let path = element[socket.upperBound...].prefix { $0 != "'" }
        return path.hasPrefix("/") ? String(path) : nil
    }
}
