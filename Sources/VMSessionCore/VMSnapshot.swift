import Foundation

/// A snapshot of a session's VM, memory and disk, as it is listed and kept: its name (unique in the
/// session), when it was taken, whether the VM was running or paused then (a revert brings it back so), and
/// the bytes it took on the host.
public struct VMSnapshot: Codable, Equatable, Sendable {
    public var name: String
    public var createdAt: Date
    /// `running` or `paused`: the state a revert brings the VM back to.
    public var state: SessionState
    public var bytes: Int64

    public init(name: String, createdAt: Date, state: SessionState, bytes: Int64) {
        self.name = name
        self.createdAt = createdAt
        self.state = state
        self.bytes = bytes
    }

    enum CodingKeys: String, CodingKey { case name, createdAt = "created", state, bytes }

    /// A snapshot name: 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'. It becomes a
    /// libvirt snapshot name, an XML text and a file name in libvirt's state: nothing else can pass.
    public static let maximumNameLength = 64

    /// Throws `invalid_argument`, saying what a name may be, unless `name` is one.
    public static func validate(name: String) throws(VMSessionError) {
        guard Identifier.isValid(name, maxLength: maximumNameLength) else {
            throw VMSessionError(
                .invalidArgument,
                "A snapshot name is 1 to \(maximumNameLength) letters, digits, '.', '_' or '-', not starting with '.' or '-'; got '\(name.prefix(80))'.")
        }
    }
}

extension SessionQuota {
    /// How many snapshots, and how many MiB of them, one session and one client may hold. Snapshot bytes
    /// are what the host's disk pays (mostly the VM's memory), so a page that may open a 4 GiB VM must not
    /// also be able to keep a hundred copies of its memory.
    public struct SnapshotLimits: Equatable, Sendable {
        public var perSession: Int
        public var perClient: Int
        public var mebibytesPerSession: Int
        public var mebibytesPerClient: Int

        /// 8 per session and 32 per page; 16 GiB per session and 64 GiB per page.
        public static let defaults = SnapshotLimits(perSession: 8, perClient: 32, mebibytesPerSession: 16_384, mebibytesPerClient: 65_536)

        public init(perSession: Int, perClient: Int, mebibytesPerSession: Int, mebibytesPerClient: Int) {
            self.perSession = perSession
            self.perClient = perClient
            self.mebibytesPerSession = mebibytesPerSession
            self.mebibytesPerClient = mebibytesPerClient
        }
    }

    /// One kept snapshot as the quota counts it.
    public struct SnapshotHolding: Equatable, Sendable {
        public var session: SessionID
        public var client: String
        public var bytes: Int64

        public init(session: SessionID, client: String, bytes: Int64) {
            self.session = session
            self.client = client
            self.bytes = bytes
        }
    }

    /// Whether session `id` of `client`, whose VM has `memoryMiB` of memory, may take one more snapshot.
    /// A snapshot's size is known only once it is taken, so the VM's memory (what the memory state takes
    /// at most) is counted for it. Refused with `insufficient_resources`, and nothing changes.
    public func checkSnapshot(of id: SessionID, by client: String, memoryMiB: Int, existing: [SnapshotHolding]) throws(VMSessionError) {
        let limits = snapshots
        let own = existing.filter { $0.session == id }
        guard own.count < limits.perSession else {
            throw VMSessionError(
                .insufficientResources,
                "The session holds \(own.count) snapshots, the limit per session (limits.snapshotsPerSession); delete one first.")
        }
        let clients = existing.filter { $0.client == client }
        guard clients.count < limits.perClient else {
            throw VMSessionError(
                .insufficientResources,
                "\(client == "local" ? "Local programs" : client) hold\(client == "local" ? "" : "s") \(clients.count) snapshots, "
                    + "the limit per origin (limits.snapshotsPerOrigin); delete one first.")
        }
        let mebibyte: Int64 = 1 << 20
        let asked = Int64(memoryMiB) * mebibyte
        let ownBytes = own.reduce(Int64(0)) { $0 + $1.bytes }
        guard ownBytes + asked <= Int64(limits.mebibytesPerSession) * mebibyte else {
            throw VMSessionError(
                .insufficientResources,
                "The session's snapshots take \(ownBytes / mebibyte) MiB; one more (up to its \(memoryMiB) MiB of memory) "
                    + "would pass the limit of \(limits.mebibytesPerSession) MiB per session (limits.snapshotMiBPerSession); delete one first.")
        }
        let clientBytes = clients.reduce(Int64(0)) { $0 + $1.bytes }
        guard clientBytes + asked <= Int64(limits.mebibytesPerClient) * mebibyte else {
            throw VMSessionError(
                .insufficientResources,
                "The snapshots of \(client == "local" ? "local programs" : client) take \(clientBytes / mebibyte) MiB; one more "
                    + "(up to \(memoryMiB) MiB) would pass the limit of \(limits.mebibytesPerClient) MiB per origin "
                    + "(limits.snapshotMiBPerOrigin); delete one first.")
        }
    }
}
