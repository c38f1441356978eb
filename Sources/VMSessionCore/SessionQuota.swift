/// How much one client (a web origin, or `local`) and the whole daemon may hold: sessions, and the cpus,
/// memory and disk of the sessions that are open. Without it any approved page could create sessions at
/// 100/s and open ten 16-vCPU, 64 GiB, 1 TiB machines. A pure value: the manager asks it before a session
/// is created (`too_many_sessions`, 429) and before one is opened (`insufficient_resources`, 507), and
/// nothing changes when it refuses. The user sets it in the daemon's settings (`limits.*`).
public struct SessionQuota: Equatable, Sendable {
    /// Cpus, memory (MiB) and disk (MiB) together.
    public struct Resources: Equatable, Sendable, CustomStringConvertible {
        public var cpus: Int
        public var memory: Int
        public var disk: Int

        public init(cpus: Int, memory: Int, disk: Int) {
            self.cpus = cpus
            self.memory = memory
            self.disk = disk
        }

        public init(_ requirements: Requirements) {
            self.init(cpus: requirements.cpus, memory: requirements.memory, disk: requirements.disk)
        }

        public static let zero = Resources(cpus: 0, memory: 0, disk: 0)

        public static func + (lhs: Resources, rhs: Resources) -> Resources {
            Resources(cpus: lhs.cpus + rhs.cpus, memory: lhs.memory + rhs.memory, disk: lhs.disk + rhs.disk)
        }

        public var description: String { "\(cpus) cpus, \(memory) MiB memory, \(disk) MiB disk" }
    }

    /// One existing session as the quota sees it: who made it, and what it holds (nil when it holds no VM).
    public struct Holding: Sendable {
        public var id: SessionID
        public var client: String
        public var resources: Resources?

        public init(id: SessionID, client: String, resources: Resources?) {
            self.id = id
            self.client = client
            self.resources = resources
        }

        /// A session holds resources from `open` until it is closed.
        public init(id: SessionID, client: String, session: Session) {
            self.init(
                id: id, client: client, resources: session.state == .closed ? nil : session.requirements.map(Resources.init))
        }
    }

    public var sessions: Int
    public var sessionsPerClient: Int
    public var resources: Resources
    public var resourcesPerClient: Resources
    /// Snapshots per session and per client (see ``checkSnapshot(of:by:memoryMiB:existing:)``).
    public var snapshots: SnapshotLimits

    /// Defaults for a desktop: 64 sessions (16 per page); open VMs up to 64 cpus, 64 GiB memory and 1 TiB disk
    /// in all, 16 cpus, 32 GiB and 256 GiB per page.
    public static let defaults = SessionQuota(
        sessions: 64, sessionsPerClient: 16,
        resources: Resources(cpus: 64, memory: 65_536, disk: 1_048_576),
        resourcesPerClient: Resources(cpus: 16, memory: 32_768, disk: 262_144))

    public init(
        sessions: Int, sessionsPerClient: Int, resources: Resources, resourcesPerClient: Resources, snapshots: SnapshotLimits = .defaults
    ) {
        self.snapshots = snapshots
        self.sessions = sessions
        self.sessionsPerClient = sessionsPerClient
        self.resources = resources
        self.resourcesPerClient = resourcesPerClient
    }

    /// Whether `client` may create one more session.
    public func checkCreate(by client: String, existing: [Holding]) throws(VMSessionError) {
        guard existing.count < sessions else {
            throw VMSessionError(
                .tooManySessions, "The daemon holds \(existing.count) sessions, its limit (limits.sessions); reuse one of them, or ask the user to raise the limit.",
                retryAfterSeconds: 60)
        }
        let own = existing.count { $0.client == client }
        guard own < sessionsPerClient else {
            throw VMSessionError(
                .tooManySessions, "\(Self.who(client)) holds \(own) sessions, the limit per origin (limits.sessionsPerOrigin); reuse one of them.",
                retryAfterSeconds: 60)
        }
    }

    /// Whether session `id` of `client` may be opened with `requirements`. What the session itself held
    /// before (a re-open) does not count against it.
    public func checkOpen(_ id: SessionID, by client: String, asking requirements: Requirements, existing: [Holding])
        throws(VMSessionError)
    {
        let asked = Resources(requirements)
        let others = existing.filter { $0.id != id }
        let total = others.compactMap(\.resources).reduce(.zero, +) + asked
        let own = others.filter { $0.client == client }.compactMap(\.resources).reduce(.zero, +) + asked
        if let field = Self.exceeded(total, resources) {
            throw VMSessionError(
                .insufficientResources,
                "Opening this session (\(asked)) would bring the daemon's open sessions to \(field.used) \(field.name), "
                    + "over its limit of \(field.limit); close another session or ask for less.")
        }
        if let field = Self.exceeded(own, resourcesPerClient) {
            throw VMSessionError(
                .insufficientResources,
                "Opening this session (\(asked)) would bring \(Self.who(client))'s open sessions to \(field.used) \(field.name), "
                    + "over the per-origin limit of \(field.limit); close another of its sessions or ask for less.")
        }
    }

    private static func exceeded(_ used: Resources, _ limit: Resources) -> (name: String, used: Int, limit: Int)? {
        if used.cpus > limit.cpus { return ("cpus", used.cpus, limit.cpus) }
        if used.memory > limit.memory { return ("MiB of memory", used.memory, limit.memory) }
        if used.disk > limit.disk { return ("MiB of disk", used.disk, limit.disk) }
        return nil
    }

    private static func who(_ client: String) -> String { client == "local" ? "Local programs" : client }
}
