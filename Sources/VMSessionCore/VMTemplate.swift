import Foundation

/// A template: a prepared VM (memory and disk) saved once, from which sessions start warm. A page opens a
/// session with `version: <template name>` and its `start` restores the template's memory onto a
/// copy-on-write disk of the session's own, instead of booting.
public struct VMTemplate: Codable, Equatable, Sendable {
    public var name: String
    public var createdAt: Date
    /// The session it was made from (kept for the record: the session may be gone since).
    public var fromSession: SessionID
    /// The image the prepared session was opened with: the template's disk is an overlay on it.
    public var baseVersion: String
    /// The VM's shape: a restored VM has the shape it was saved with, whatever a page asks.
    public var cpus: Int
    public var memory: Int
    public var disk: Int
    /// What the template's files take on the host (its memory image and its disk).
    public var bytes: Int64
    /// The sessions (not closed) made from it.
    public var sessions: [SessionID]
    /// The libvirt host its files are on (the prepared session's): every session from it runs there.
    public var host: String

    public init(
        name: String, createdAt: Date, fromSession: SessionID, baseVersion: String, cpus: Int, memory: Int, disk: Int,
        bytes: Int64, sessions: [SessionID] = [], host: String = HostDefinition.localName
    ) {
        self.host = host
        self.name = name
        self.createdAt = createdAt
        self.fromSession = fromSession
        self.baseVersion = baseVersion
        self.cpus = cpus
        self.memory = memory
        self.disk = disk
        self.bytes = bytes
        self.sessions = sessions
    }

    enum CodingKeys: String, CodingKey {
        case name, createdAt = "created", fromSession, baseVersion, cpus, memory, disk, bytes, sessions, host
    }

    /// The requirements a session opened from this template runs with: the template's cpus and memory (a
    /// restored VM cannot change them) and at least its disk.
    public func requirements(asked: Requirements) -> Requirements {
        Requirements(cpus: cpus, memory: memory, disk: max(disk, asked.disk), version: name)
    }

    public static let maximumNameLength = 64

    /// Throws `invalid_argument`, saying what a name may be, unless `name` is one. A template name is a
    /// `version` pages ask for, and a directory name under the daemon's state.
    public static func validate(name: String) throws(VMSessionError) {
        guard Identifier.isValid(name, maxLength: maximumNameLength) else {
            throw VMSessionError(
                .invalidArgument,
                "A template name is 1 to \(maximumNameLength) letters, digits, '.', '_' or '-', not starting with '.' or '-'; got '\(name.prefix(80))'.")
        }
    }
}

/// The decisions about templates, as values: what a `start` of a session from a template does, whether a
/// session can be made into a template, and whether a template can be deleted. No I/O.
public enum TemplatePolicy {
    /// How a session opened from a template gets running.
    public enum StartPlan: Equatable, Sendable {
        /// Its first start: the template's memory restored onto the session's fresh overlay.
        case restoreTemplate
        /// It hibernated: its own saved memory is restored (as for any session).
        case resumeHibernation
        /// It ran and was stopped: its own disk has moved on from the template's memory, so restoring that
        /// memory would corrupt it; it boots cold from its own disk.
        case bootOwnDisk
    }

    /// What `start` does for a session from a template in `state`, given whether it ran before.
    public static func startPlan(state: SessionState, hasRun: Bool) -> StartPlan {
        if state == .saved { return .resumeHibernation }
        return hasRun ? .bootOwnDisk : .restoreTemplate
    }

    /// Checks that a session in `state`, with or without a seed drive, can become template `name`, which must
    /// be free (not a template, not an image).
    public static func checkCreate(
        name: String, sessionState: SessionState, hasSeed: Bool, existingTemplates: [String], isImage: Bool,
        runsFromTemplate: String? = nil
    ) throws(VMSessionError) {
        try VMTemplate.validate(name: name)
        // A warm session's disk is an overlay on its template's disk: a template made from it would name that disk
        // as its own disk's base, and deleting the first template would leave the second without its disk.
        if let source = runsFromTemplate {
            throw VMSessionError(
                .invalidState,
                "This session runs from template '\(source)', so a template made from it would depend on that template's "
                    + "disk. Make the template from a session opened from an image.")
        }
        guard sessionState == .running else {
            throw VMSessionError(
                .invalidState, "Only a running session can become a template; this one is \(sessionState.rawValue).")
        }
        guard hasSeed else {
            throw VMSessionError(
                .invalidState,
                "A template is made from a session started with user-data: the seed drive it had is where each warm "
                    + "session's own user-data arrives. Start the session with (warm-up) user-data first.")
        }
        guard !existingTemplates.contains(name) else {
            throw VMSessionError(.invalidState, "There is already a template '\(name)'; delete it first or choose another name.")
        }
        guard !isImage else {
            throw VMSessionError(.invalidState, "'\(name)' is an image's version; a template needs a name of its own.")
        }
    }

    /// Checks that template `name` can be deleted: refused (`invalid_state`, 409) while sessions that are not
    /// closed run from it, since their disks are overlays on its disk.
    public static func checkDelete(name: String, users: [(id: SessionID, name: String)]) throws(VMSessionError) {
        guard users.isEmpty else {
            let names = users.prefix(5).map { "'\($0.name)'" }.joined(separator: ", ")
            throw VMSessionError(
                .invalidState,
                "Template '\(name)' is in use by \(users.count) session(s) (\(names)\(users.count > 5 ? ", …" : "")); close them first.")
        }
    }
}
