/// How many connections and event streams the daemon may hold, given its file-descriptor limit.
///
/// Why: every HTTP connection and every event stream costs a descriptor, and so do SQLite, libvirt, QEMU's
/// logs and image files. A daemon that lets clients take the last descriptors crashes in places it cannot
/// handle (libdispatch dies with SIGILL). So connections are capped below the limit with a reserve kept for
/// the daemon's own work, and event streams below the connection cap, so that ordinary requests (and the
/// request that closes a stream) still get through when every stream slot is taken.
public struct ConnectionBudget: Equatable, Sendable {
    /// Descriptors kept for the daemon itself: database, libvirt, logs, image files, subprocess pipes.
    public static let reserve = 256
    /// Connections kept for ordinary requests when every event stream slot is taken.
    public static let requestHeadroom = 32
    /// The fewest connections the daemon will run with, whatever the limit says.
    public static let minimumConnections = 16

    /// Open connections at most; past it the server stops accepting (clients wait in the listen backlog).
    public let connections: Int
    /// Open event streams at most, across all clients; past it a new stream gets `too_many_streams`.
    public let eventStreams: Int

    public init(connections: Int, eventStreams: Int) {
        self.connections = connections
        self.eventStreams = eventStreams
    }

    /// The budget for a process whose descriptor limit is `descriptorLimit`, within the configured maxima.
    public static func fitting(descriptorLimit: Int, maxConnections: Int, maxEventStreams: Int) -> ConnectionBudget {
        let available = max(descriptorLimit - reserve, minimumConnections)
        let connections = max(min(maxConnections, available), minimumConnections)
        let streams = max(min(maxEventStreams, connections - requestHeadroom), 1)
        return ConnectionBudget(connections: connections, eventStreams: streams)
    }
}
