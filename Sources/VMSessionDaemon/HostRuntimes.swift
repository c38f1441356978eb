import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import VMSessionContext
import VMSessionCore
import VMSessionHypervisor

/// The one owner of "which hypervisor serves which host, and which host serves which session" (issue 22).
///
/// Why it is itself a ``Hypervisor``: the session manager and every service (snapshots, templates, the idle
/// controller, the console, metrics, guest API probes, the display) hold one `any Hypervisor` and call it per
/// session. This type routes each such call to the hypervisor of the session's host, so that none of them
/// changed, and the manager took no new job. It always holds the local hypervisor, and a remote host's while
/// that host's connection is up: the ``HostMonitor`` hands one over on connect (built by the daemon's
/// ``Factory`` from the host's ``HostConnection``) and takes it back on loss. The decisions (where a call goes,
/// what a close on a lost host means, what a host's loss and return ask for) are a ``HostRoster`` value.
///
/// A call for a session whose host is lost throws `host_unreachable`, naming the host, since when and why; a
/// close there succeeds at once (the session is forgotten) and its VM is removed when the host returns. When a
/// host connects, each of its sessions is announced on ``changes`` (so the manager looks at it against its VM,
/// as at start), its sessions are told (`hostReachable`) if it had been lost, and leftover VMs are removed.
/// `allMachines` reports only the VMs of reachable hosts, and ``reaches(_:)`` tells the manager's start-up
/// reconciliation which sessions to skip rather than to stop.
///
/// Forwarding each host's lifecycle events into ``changes``, and running each attached runtime's own follow-up of
/// them (``Hypervisor/followLifecycle()``), is this service's `run()`; nothing is awaited under its lock.
public final class HostRuntimes: Hypervisor, Service {
    /// Builds the hypervisor of a remote host from its connection.
    public typealias Factory = @Sendable (HostDefinition, HostConnection) throws(VMSessionError) -> any Hypervisor
    /// Writes an event of `kind` with `payload` on each session's stream.
    public typealias Announce = @Sendable (_ sessions: [SessionID], _ kind: SessionEvent.Kind, _ payload: String) -> Void

    private struct Runtime {
        let hypervisor: any Hypervisor
        let generation: UInt64
        /// Finished when the runtime is taken back: ends the forwarding of its events.
        let detached: AsyncStream<Void>.Continuation
    }

    /// A runtime whose events the service forwards.
    private struct Attachment: Sendable {
        let host: String
        let changes: AsyncStream<SessionID>
        let detached: AsyncStream<Void>
        /// The runtime's own follow-up of its events (``Hypervisor/followLifecycle()``).
        let follow: @Sendable () async -> Void
    }

    private struct State {
        var roster = HostRoster()
        var runtimes: [String: Runtime] = [:]
        var nextGeneration: UInt64 = 1
        /// The host of each template not on the local host (its files are there; see ``placeTemplate(_:on:)``).
        var templateHosts: [String: String] = [:]
    }

    private let local: any Hypervisor
    private let state = Mutex(State())
    private let factory: Factory
    private let announce: Announce
    private let logger: Logger
    private let attachments: AsyncStream<Attachment>
    private let attachmentsContinuation: AsyncStream<Attachment>.Continuation
    private let changesContinuation: AsyncStream<SessionID>.Continuation
    public let changes: AsyncStream<SessionID>

    public init(local: any Hypervisor, factory: @escaping Factory, announce: @escaping Announce = { _, _, _ in }, logger: Logger) {
        self.local = local
        self.factory = factory
        self.announce = announce
        self.logger = logger
        (attachments, attachmentsContinuation) = AsyncStream.makeStream()
        (changes, changesContinuation) = AsyncStream.makeStream()
    }

    public var description: HypervisorDescription { local.description }

    // MARK: Service

    /// Forwards the local hypervisor's lifecycle events, and each attached runtime's until it is taken back.
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { [local, changesContinuation] in
                for await id in local.changes.cancelOnGracefulShutdown() { changesContinuation.yield(id) }
            }
            for await attachment in attachments.cancelOnGracefulShutdown() {
                group.addTask { [changesContinuation] in
                    await withTaskGroup(of: Void.self) { forwarding in
                        forwarding.addTask {
                            // The follow-up may end at once (nothing to follow): only the forwarding's end ends both.
                            await withDiscardingTaskGroup { events in
                                events.addTask { await attachment.follow() }
                                for await id in attachment.changes { changesContinuation.yield(id) }
                                events.cancelAll()
                            }
                        }
                        forwarding.addTask { for await _ in attachment.detached {} }
                        await forwarding.next()
                        forwarding.cancelAll()
                    }
                }
            }
            group.cancelAll()
        }
        changesContinuation.finish()
    }

    // MARK: Placement and hosts

    /// `id` is placed on `host` (an open decided it, or the store says so at start); a closed session on a host
    /// other than `local` is a leftover (`closed`): its VM, if any, goes when that host connects.
    public func place(_ id: SessionID, on host: String, closed: Bool = false) {
        state.withLock { state in
            if closed { state.roster.leave(id, on: host) } else { state.roster.place(id, on: host) }
        }
    }

    /// The host of `id` (`local` unless placed elsewhere).
    public func host(of id: SessionID) -> String { state.withLock { $0.roster.host(of: id) } }

    /// Whether `host` has a hypervisor here now (the local host always): placement sends sessions only to those.
    public func serves(_ host: String) -> Bool {
        host == HostDefinition.localName || state.withLock { $0.runtimes[host] != nil }
    }

    /// Whether calls for `id` reach its host now.
    public func reaches(_ id: SessionID) -> Bool {
        if case .host = state.withLock({ $0.roster.route(id) }) { return true }
        return false
    }

    /// `definition`'s host connected: its hypervisor is built from `connection` (on the connection's queue, off the
    /// pool: building it makes calls on the connection, which must not overlap the monitor's probes), settles what
    /// its VMs need beyond libvirt (``Hypervisor/reconnected()``: socket forwards, guest networks) and is attached.
    /// Throws what the factory throws (the host then counts as not connected).
    public func connect(_ definition: HostDefinition, connection: HostConnection) async throws(VMSessionError) {
        let factory = self.factory
        let hypervisor = try await connection.run { (_) throws(VMSessionError) -> any Hypervisor in try factory(definition, connection) }
        // Before any session's call reaches it (a start must not race the reconciliation of its network).
        await hypervisor.reconnected()
        await attach(definition.name, hypervisor: hypervisor)
    }

    /// Attaches `hypervisor` as `host`'s runtime: its events are followed, its leftover VMs removed, its sessions
    /// told it is back (if it was lost) and looked at again.
    public func attach(_ host: String, hypervisor: any Hypervisor) async {
        let (detached, ending) = AsyncStream<Void>.makeStream()
        let (back, previous) = state.withLock { state -> (HostRoster.Return, Runtime?) in
            let previous = state.runtimes[host]
            state.runtimes[host] = Runtime(hypervisor: hypervisor, generation: state.nextGeneration, detached: ending)
            state.nextGeneration += 1
            return (state.roster.connected(host), previous)
        }
        previous?.detached.finish()
        attachmentsContinuation.yield(
            Attachment(host: host, changes: hypervisor.changes, detached: detached, follow: { await hypervisor.followLifecycle() }))
        logger.notice("host runtime attached", metadata: ["host": "\(host)", "sessions": "\(back.sessions.count)"])
        for id in back.leftovers {
            do throws(VMSessionError) {
                try await hypervisor.remove(id)
                logger.notice("removed the VM of a session closed while its host was lost", metadata: ["host": "\(host)", "session": "\(id)"])
            } catch {
                logger.warning("cannot remove a leftover VM", metadata: ["host": "\(host)", "session": "\(id)", "error": "\(error)"])
            }
        }
        if back.wasLost, !back.sessions.isEmpty {
            await tell(back.sessions, .hostReachable, SessionEvent.encode(SessionEvent.HostReachable(host: host)))
        }
        for id in back.sessions { changesContinuation.yield(id) }
    }

    /// `host` was lost at `time` (or could not be connected to): its runtime is taken back and its sessions told,
    /// once per loss.
    public func lost(_ host: String, at time: Date, reason: String) async {
        let (told, runtime) = state.withLock { state -> ([SessionID], Runtime?) in
            let runtime = state.runtimes.removeValue(forKey: host)
            return (state.roster.lost(host, at: time, reason: reason), runtime)
        }
        runtime?.detached.finish()
        if !told.isEmpty {
            await tell(told, .hostUnreachable, SessionEvent.encode(SessionEvent.HostUnreachable(host: host, reason: reason, since: time)))
        }
        if runtime != nil || !told.isEmpty {
            logger.notice("host runtime lost", metadata: ["host": "\(host)", "reason": "\(reason)", "sessions": "\(told.count)"])
        }
    }

    /// Writes the events off the cooperative pool (they are SQLite writes).
    private func tell(_ sessions: [SessionID], _ kind: SessionEvent.Kind, _ payload: String) async {
        let announce = self.announce
        await offPool { announce(sessions, kind, payload) }
    }

    /// The admin removed `host` (it held no sessions): its runtime goes.
    public func removeHost(_ host: String) {
        let runtime = state.withLock { state -> Runtime? in
            state.roster.removeHost(host)
            return state.runtimes.removeValue(forKey: host)
        }
        runtime?.detached.finish()
    }

    // MARK: Routing

    /// The hypervisor serving `id`, or `host_unreachable`.
    private func hypervisor(for id: SessionID) throws(VMSessionError) -> any Hypervisor {
        let (route, runtime) = state.withLock { state -> (HostRoster.Route, Runtime?) in
            let route = state.roster.route(id)
            if case .host(let name) = route { return (route, state.runtimes[name]) }
            return (route, nil)
        }
        switch route {
        case .host(let name):
            if name == HostDefinition.localName { return local }
            if let runtime { return runtime.hypervisor }
            throw Self.unreachable(name, since: nil, reason: "the daemon has no connection to it")
        case .unreachable(let host, let since, let reason):
            throw Self.unreachable(host, since: since, reason: reason)
        }
    }

    static func unreachable(_ host: String, since: Date?, reason: String) -> VMSessionError {
        let when = since.map { " since \($0.formatted(.iso8601))" } ?? ""
        return VMSessionError(
            .hostUnreachable,
            "The session's host '\(host)' is unreachable\(when): \(reason). Its VM is left as it is; close forgets the session.")
    }

    /// Every reachable hypervisor with its host's name (the local one first).
    private func reachable() -> [(String, any Hypervisor)] {
        let remote = state.withLock { state in
            state.runtimes.filter { state.roster.reaches($0.key) }.map { ($0.key, $0.value.hypervisor) }
        }
        return [(HostDefinition.localName, local)] + remote.sorted { $0.0 < $1.0 }
    }

    /// Keeps of `found` (from `host`'s hypervisor) the VMs of sessions on `host`: a driver two hosts share (libvirt's
    /// test driver) reports one host's VMs on the other too.
    private func own<Value>(_ found: [SessionID: Value], on host: String) -> [SessionID: Value] {
        let roster = state.withLock { $0.roster }
        return found.filter { roster.host(of: $0.key) == host }
    }

    // MARK: Hypervisor

    public func define(_ spec: MachineSpec) async throws(VMSessionError) { try await hypervisor(for: spec.id).define(spec) }
    public func start(_ id: SessionID) async throws(VMSessionError) { try await hypervisor(for: id).start(id) }
    public func pause(_ id: SessionID) async throws(VMSessionError) { try await hypervisor(for: id).pause(id) }
    public func resume(_ id: SessionID) async throws(VMSessionError) { try await hypervisor(for: id).resume(id) }
    public func reset(_ id: SessionID) async throws(VMSessionError) { try await hypervisor(for: id).reset(id) }
    public func stop(_ id: SessionID, grace: Duration) async throws(VMSessionError) { try await hypervisor(for: id).stop(id, grace: grace) }
    public func hibernate(_ id: SessionID) async throws(VMSessionError) { try await hypervisor(for: id).hibernate(id) }

    /// Removes `id`'s VM on its host; on a lost host the session is forgotten now and its VM removed on return.
    public func remove(_ id: SessionID) async throws(VMSessionError) {
        let removal = state.withLock { $0.roster.remove(id) }
        switch removal {
        case .now(let host):
            let hypervisor = try hypervisor(on: host, for: id)
            try await hypervisor.remove(id)
            state.withLock { state in
                if state.roster.host(of: id) == host { state.roster.forget(id) }
            }
        case .later(let host):
            logger.notice("session forgotten on a lost host; its VM goes when the host returns", metadata: ["host": "\(host)", "session": "\(id)"])
        }
    }

    private func hypervisor(on host: String, for id: SessionID) throws(VMSessionError) -> any Hypervisor {
        if host == HostDefinition.localName { return local }
        guard let runtime = state.withLock({ $0.runtimes[host] }) else {
            throw Self.unreachable(host, since: nil, reason: "the daemon has no connection to it")
        }
        return runtime.hypervisor
    }

    public func setExecutionCap(_ cap: ExecutionCap, for id: SessionID) async throws(VMSessionError) {
        try await hypervisor(for: id).setExecutionCap(cap, for: id)
    }
    public func appliedExecutionCap(of id: SessionID) async throws(VMSessionError) -> ExecutionCap? {
        try await hypervisor(for: id).appliedExecutionCap(of: id)
    }
    public func status(of id: SessionID) async throws(VMSessionError) -> MachineStatus { try await hypervisor(for: id).status(of: id) }

    /// The VMs of every reachable host; a lost host's are left out (``reaches(_:)`` tells them from absent ones).
    public func allMachines() async throws(VMSessionError) -> [SessionID: MachineStatus] {
        var all: [SessionID: MachineStatus] = [:]
        for (host, hypervisor) in reachable() {
            all.merge(own(try await hypervisor.allMachines(), on: host)) { first, _ in first }
        }
        return all
    }

    public func cpuTime(of id: SessionID) async throws(VMSessionError) -> UInt64? { try await hypervisor(for: id).cpuTime(of: id) }

    public func repairInterrupted() async throws(VMSessionError) -> [String] {
        var repairs: [String] = []
        for (host, hypervisor) in reachable() { repairs += try await hypervisor.repairInterrupted().map { "\(host): \($0)" } }
        return repairs
    }

    public func displaySocket(of id: SessionID) -> String? { (try? hypervisor(for: id))?.displaySocket(of: id) }
    public func noDisplayReason(of id: SessionID) -> String {
        (try? hypervisor(for: id))?.noDisplayReason(of: id) ?? "The session's host is not known to this daemon."
    }
    public func screenshot(of id: SessionID) async throws(VMSessionError) -> [UInt8] { try await hypervisor(for: id).screenshot(of: id) }
    public func console(of id: SessionID) -> ConsoleEndpoints? { (try? hypervisor(for: id))?.console(of: id) }
    public func guestAPIAddress(of id: SessionID) -> GuestAPIAddress? { (try? hypervisor(for: id))?.guestAPIAddress(of: id) }
    /// Its host's; none, with no reason, for a session whose host is not here now.
    public func guestNetworkOffer(for id: SessionID) -> GuestNetworkOffer {
        (try? hypervisor(for: id))?.guestNetworkOffer(for: id) ?? GuestNetworkOffer(available: false, reason: nil)
    }
    /// The local host's.
    public var guestNetworkOffer: GuestNetworkOffer { local.guestNetworkOffer }

    /// Whether `host`'s guests get a network there (the host view's `guestNetwork`); nil for a host with no
    /// hypervisor here now (not connected yet, lost, or unknown).
    public func guestNetworkOffer(onHost host: String) -> GuestNetworkOffer? {
        if host == HostDefinition.localName { return local.guestNetworkOffer }
        return state.withLock { $0.runtimes[host]?.hypervisor }?.guestNetworkOffer
    }

    /// Each reachable host's figures; a host whose read fails is left out (logged), the others still count.
    public func machineStats() async throws -> [SessionID: MachineStats] {
        var all: [SessionID: MachineStats] = [:]
        for (host, hypervisor) in reachable() {
            do {
                all.merge(own(try await hypervisor.machineStats(), on: host)) { first, _ in first }
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                logger.debug("cannot read a host's VM figures", metadata: ["host": "\(host)", "error": "\(error)"])
            }
        }
        return all
    }

    public func createSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) -> Int64 {
        try await hypervisor(for: id).createSnapshot(name, of: id)
    }
    public func revertToSnapshot(_ name: String, of id: SessionID, paused: Bool) async throws(VMSessionError) {
        try await hypervisor(for: id).revertToSnapshot(name, of: id, paused: paused)
    }
    public func deleteSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) {
        try await hypervisor(for: id).deleteSnapshot(name, of: id)
    }
    public func snapshotNames(of id: SessionID) async throws(VMSessionError) -> [String] {
        try await hypervisor(for: id).snapshotNames(of: id)
    }
    public func hasSeed(_ id: SessionID) -> Bool { (try? hypervisor(for: id))?.hasSeed(id) ?? false }
    public func replaceSeed(_ seed: ContextSeed, for id: SessionID) async throws(VMSessionError) {
        try await hypervisor(for: id).replaceSeed(seed, for: id)
    }

    // MARK: Templates

    // A template's files (memory image, base disk) stay on the host of the session it was made from, and the
    // sessions from it are placed on that host (the daemon's placement, given the template's host): so making,
    // defining and restoring go to the session's host, and deleting to the template's.

    /// Template `name`'s files are on `host` (the store says so at start; a capture records it itself).
    public func placeTemplate(_ name: String, on host: String) {
        state.withLock { state in
            if host == HostDefinition.localName { state.templateHosts[name] = nil } else { state.templateHosts[name] = host }
        }
    }

    /// The host whose files template `name` has (`local` unless made elsewhere).
    public func templateHost(_ name: String) -> String {
        state.withLock { $0.templateHosts[name] } ?? HostDefinition.localName
    }

    public func captureTemplate(_ name: String, of id: SessionID) async throws(VMSessionError) -> Int64 {
        let host = host(of: id)
        // Recorded first: should the capture fail half-way, its leftovers are deleted on that host.
        placeTemplate(name, on: host)
        return try await hypervisor(on: host, for: id).captureTemplate(name, of: id)
    }
    public func defineFromTemplate(_ name: String, for spec: MachineSpec, source: SessionID) async throws(VMSessionError) {
        try await hypervisor(for: spec.id).defineFromTemplate(name, for: spec, source: source)
    }
    public func restoreTemplate(_ name: String, for spec: MachineSpec, source: SessionID) async throws(VMSessionError) {
        try await hypervisor(for: spec.id).restoreTemplate(name, for: spec, source: source)
    }

    /// Deletes template `name`'s files on its host; `host_unreachable` while that host is lost (nothing changes).
    public func removeTemplate(_ name: String) async throws(VMSessionError) {
        let host = templateHost(name)
        if host == HostDefinition.localName { return try await local.removeTemplate(name) }
        let (runtime, reachable) = state.withLock { ($0.runtimes[host], $0.roster.reaches(host)) }
        guard let runtime, reachable else {
            throw VMSessionError(
                .hostUnreachable, "Template '\(name)' is on host '\(host)', which is unreachable now; its files there cannot be deleted yet.")
        }
        try await runtime.hypervisor.removeTemplate(name)
    }

    /// The complete templates of every reachable host (a lost host's are left out).
    public func templateNames() async -> [String] {
        var names: Set<String> = []
        for (_, hypervisor) in reachable() { names.formUnion(await hypervisor.templateNames()) }
        return names.sorted()
    }
}
