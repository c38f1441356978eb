import Logging
import ServiceLifecycle
import VMSessionCore
import VMSessionHypervisor

/// Every session's console, attached while somebody watches it: the one place that creates a
/// ``ConsoleMultiplexer`` for a session (so that all its clients share one), and the owner of their input
/// pumps (one task each, in this service's task group: none is left unowned).
///
/// An actor on a thread of its own: attaching reads the tail of the console log, which is blocking file I/O
/// and stays off Swift's cooperative pool.
public actor ConsoleHub: Service {
    public nonisolated let limits: ConsoleMultiplexer.Limits
    /// How the clients' connections frame output (the API's WebSocket frames).
    let framing: ConsoleMultiplexer.Framing
    let logger: Logger
    private var consoles: [SessionID: ConsoleMultiplexer] = [:]
    private let pumps: AsyncStream<ConsoleMultiplexer>
    private let pumpsContinuation: AsyncStream<ConsoleMultiplexer>.Continuation
    private nonisolated let executor = BlockingExecutor(label: "vmsessiond.consoles")

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    public init(limits: ConsoleMultiplexer.Limits = .defaults, framing: ConsoleMultiplexer.Framing, logger: Logger) {
        self.limits = limits
        self.framing = framing
        self.logger = logger
        (pumps, pumpsContinuation) = AsyncStream.makeStream(of: ConsoleMultiplexer.self)
    }

    /// A new client of the session's console: attaches to it if nobody watches it yet.
    public func join(_ id: SessionID, endpoints: ConsoleEndpoints, mode: ConsoleProtocol.Mode) throws(VMSessionError)
        -> ConsoleMultiplexer.Viewer
    {
        consoles = consoles.filter { !$0.value.hasEnded }
        if let console = consoles[id] {
            if let viewer = console.join(mode) { return viewer }
            if !console.hasEnded { throw Self.full }
        }
        let console = try ConsoleMultiplexer(session: id, endpoints: endpoints, limits: limits, framing: framing, logger: logger)
        guard let viewer = console.join(mode) else { throw Self.full }
        consoles[id] = console
        pumpsContinuation.yield(console)
        return viewer
    }

    /// How many clients the session's console has now.
    public func viewerCount(of id: SessionID) -> Int { consoles[id].map { $0.hasEnded ? 0 : $0.viewerCount } ?? 0 }

    /// How many clients all consoles have now (the metrics).
    public func viewerCount() -> Int { consoles.values.reduce(0) { $0 + ($1.hasEnded ? 0 : $1.viewerCount) } }

    public static var full: VMSessionError {
        VMSessionError(.tooManyStreams, "This console has its maximum of clients; close one first.", retryAfterSeconds: 5)
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            for await console in pumps.cancelOnGracefulShutdown() {
                group.addTask { await console.pumpInput() }
            }
            // Shutting down: every console ends, which ends its pump.
            for console in consoles.values { console.end(.shuttingDown) }
            consoles = [:]
        }
    }
}
