import Foundation
import Logging
import VMSessionCore
import VMSessionHypervisor
import VMSessionStore

/// The owner of sessions' snapshots: it checks what is asked (the name, that it exists or not, the quota,
/// the session's state) before anything changes, keeps the snapshots' records and events, and has the
/// hypervisor take, revert and delete them. The work runs as an operation of the ``SessionManager`` (see
/// ``SessionWork``), so a snapshot never overlaps another action on its session; the manager knows nothing
/// of snapshots beyond running their work.
///
/// A record is written `creating` / `deleting` before the hypervisor is touched and confirmed after;
/// ``reconcile()`` settles what a killed daemon left. Records go with their session (the store drops them
/// when it is closed or deleted, as the hypervisor drops the VM's disk and libvirt's metadata).
public actor SnapshotService {
    let manager: SessionManager
    let store: SessionStore
    let events: EventHub
    let hypervisor: any Hypervisor
    let quota: SessionQuota
    let logger: Logger
    /// Store calls block: they run on a thread of their own, as the manager's do.
    private let executor = BlockingExecutor(label: "vmsessiond.snapshots")
    /// Sessions with snapshots a killed run left half-made or half-deleted, on a host that was unreachable at start:
    /// settled the next time the session's snapshots are used and its host answers (see ``settleDeferred(_:)``).
    private var deferred: Set<SessionID> = []
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    public init(manager: SessionManager, logger: Logger = Logger(label: "vmsessiond.snapshots")) {
        self.manager = manager
        self.store = manager.store
        self.events = manager.events
        self.hypervisor = manager.hypervisor
        self.quota = manager.configuration.quota
        self.logger = logger
    }

    /// The session's snapshots, oldest first.
    public func list(_ id: SessionID) async throws(VMSessionError) -> [VMSnapshot] {
        _ = try await manager.session(id)
        await settleDeferred(id)
        return try storeCall { try store.snapshots(of: id) }.filter { $0.status == .ready }.map(\.snapshot)
    }

    /// Takes snapshot `name` of the running or paused VM: an operation (202). Refused before anything changes
    /// if the name is not a name or is taken, the VM is neither running nor paused, or the quota is used up.
    public func create(_ name: String, on id: SessionID) async throws(VMSessionError) -> SessionManager.ActionReceipt {
        try VMSnapshot.validate(name: name)
        let session = try await manager.session(id)
        await settleDeferred(id)
        guard session.state == .running || session.state == .paused else {
            throw VMSessionError(
                .invalidState, "Only a running or paused VM can be snapshotted; this session is \(session.state.rawValue).")
        }
        let client = try checkCreate(name, on: id, memoryMiB: session.requirements?.memory ?? 0)
        let work = SessionWork(steps: 2) { (progress) throws(VMSessionError) in
            try await self.take(name, on: id, client: client, progress: progress)
        }
        return try await manager.perform(.snapshot, on: id, input: .work(work))
    }

    /// Brings the VM back to snapshot `name`, running or paused as it was then: an operation (202).
    public func revert(to name: String, on id: SessionID) async throws(VMSessionError) -> SessionManager.ActionReceipt {
        try VMSnapshot.validate(name: name)
        let session = try await manager.session(id)
        await settleDeferred(id)
        let snapshot = try existing(name, on: id)
        guard session.state == .running || session.state == .paused else {
            throw VMSessionError(
                .invalidState, "Only a running or paused VM can be reverted to a snapshot; this session is \(session.state.rawValue).")
        }
        let work = SessionWork(reaching: snapshot.state, steps: 2) { (progress) throws(VMSessionError) in
            try await self.revert(snapshot, on: id, progress: progress)
        }
        return try await manager.perform(.revert, on: id, input: .work(work))
    }

    /// Deletes snapshot `name` (at once; the VM stays as it is).
    public func delete(_ name: String, on id: SessionID) async throws(VMSessionError) {
        try VMSnapshot.validate(name: name)
        _ = try await manager.session(id)
        await settleDeferred(id)
        _ = try existing(name, on: id)
        let work = SessionWork(steps: 1) { (progress) throws(VMSessionError) in
            try await self.remove(name, on: id, progress: progress)
        }
        _ = try await manager.perform(.deleteSnapshot, on: id, input: .work(work))
    }

    /// Settles snapshots a killed daemon left half-made or half-deleted, against the hypervisor. The daemon
    /// calls it once at start, after the manager's ``SessionManager/reconcile()``.
    ///
    /// A session whose host cannot be reached now (a remote host not connected yet, or lost) keeps its records as
    /// they are, settled when its snapshots are next used and the host answers.
    public func reconcile() async throws(VMSessionError) {
        try await settle(nil)
    }

    /// Settles what ``reconcile()`` left for later on session `id`, if its host answers now.
    private func settleDeferred(_ id: SessionID) async {
        guard deferred.contains(id) else { return }
        deferred.remove(id)
        do {
            try await settle(id)
        } catch {
            logger.warning("cannot settle snapshots a killed run left", metadata: ["session": "\(id)", "error": "\(error)"])
        }
    }

    private func settle(_ session: SessionID?) async throws(VMSessionError) {
        let unsettled = try storeCall { try store.snapshots(of: session) }.filter { $0.status != .ready }
        for var stored in unsettled {
            let id = stored.session
            let name = stored.snapshot.name
            let taken: [String]
            do throws(VMSessionError) {
                taken = try await hypervisor.snapshotNames(of: id)
            } catch where error.code == .hostUnreachable {
                deferred.insert(id)
                logger.notice(
                    "snapshots a killed run left are on a host that is unreachable now; settled later",
                    metadata: ["session": "\(id)", "snapshot": "\(name)"])
                continue
            }
            if stored.status == .creating, taken.contains(name) {
                stored.status = .ready
                let toSave = stored
                try storeCall { try events.record { try store.save(toSave, events: [Self.event(.snapshotCreated, toSave.snapshot)]) } }
                logger.notice("kept a snapshot a killed run had taken", metadata: ["session": "\(id)", "snapshot": "\(name)"])
                continue
            }
            try await hypervisor.deleteSnapshot(name, of: id)
            let announce = stored.status == .deleting ? [Self.event(.snapshotDeleted, stored.snapshot)] : []
            try storeCall { try events.record { try store.deleteSnapshot(name, of: id, events: announce) } }
            logger.notice(
                "dropped a snapshot a killed run left \(stored.status.rawValue)", metadata: ["session": "\(id)", "snapshot": "\(name)"])
        }
    }

    // MARK: Work (run by the manager as the session's operation)

    private func take(_ name: String, on id: SessionID, client: String, progress: SessionWork.Progress) async throws(VMSessionError) {
        // Checked again under the session's lock: another request may have taken the name or the quota meanwhile.
        let session = try await manager.session(id)
        _ = try checkCreate(name, on: id, memoryMiB: session.requirements?.memory ?? 0)
        let state: SessionState = session.state == .paused ? .paused : .running
        var stored = StoredSnapshot(
            session: id, client: client, snapshot: VMSnapshot(name: name, createdAt: Date(), state: state, bytes: 0), status: .creating)
        let intent = stored
        try storeCall { try store.save(intent) }
        await progress(1, "Saving the VM's memory and disk as '\(name)'")
        do {
            stored.snapshot.bytes = try await hypervisor.createSnapshot(name, of: id)
        } catch {
            try? storeCall { try store.deleteSnapshot(name, of: id) }
            throw error
        }
        stored.status = .ready
        let done = stored
        try storeCall { try events.record { try store.save(done, events: [Self.event(.snapshotCreated, done.snapshot)]) } }
        await progress(2, "Snapshot '\(name)' taken")
        logger.info("snapshot taken", metadata: ["session": "\(id)", "snapshot": "\(name)", "bytes": "\(done.snapshot.bytes)"])
    }

    private func revert(_ snapshot: VMSnapshot, on id: SessionID, progress: SessionWork.Progress) async throws(VMSessionError) {
        await progress(1, "Reverting the VM to '\(snapshot.name)'")
        try await hypervisor.revertToSnapshot(snapshot.name, of: id, paused: snapshot.state == .paused)
        // A revert in place keeps the VM's process and its cap; libvirt's fallback runs it in a new process,
        // which the session's cap applies to too (applying it again to the same process changes nothing).
        let cap = try await manager.session(id).executionCap
        if cap != .unlimited, hypervisor.description.supportsExecutionCap {
            try await hypervisor.setExecutionCap(cap, for: id)
        }
        try storeCall {
            try events.record { [try store.append(.snapshotReverted, payload: Self.event(.snapshotReverted, snapshot).1, for: id, at: Date())] }
        }
        await progress(2, "Reverted to '\(snapshot.name)' (\(snapshot.state.rawValue))")
        logger.info("reverted to a snapshot", metadata: ["session": "\(id)", "snapshot": "\(snapshot.name)"])
    }

    private func remove(_ name: String, on id: SessionID, progress: SessionWork.Progress) async throws(VMSessionError) {
        guard var stored = try storeCall({ try store.snapshots(of: id) }).first(where: { $0.snapshot.name == name }) else {
            throw VMSessionError(.notFound, "The session has no snapshot '\(name)'.")
        }
        stored.status = .deleting
        let intent = stored
        try storeCall { try store.save(intent) }
        await progress(0, "Deleting snapshot '\(name)'")
        try await hypervisor.deleteSnapshot(name, of: id)
        try storeCall { try events.record { try store.deleteSnapshot(name, of: id, events: [Self.event(.snapshotDeleted, stored.snapshot)]) } }
        await progress(1, "Snapshot '\(name)' deleted")
        logger.info("snapshot deleted", metadata: ["session": "\(id)", "snapshot": "\(name)"])
    }

    // MARK: Checks

    /// Checks that `name` is free on session `id` and that the quota allows one more; returns the session's client.
    private func checkCreate(_ name: String, on id: SessionID, memoryMiB: Int) throws(VMSessionError) -> String {
        guard let client = try storeCall({ try store.session(id) })?.client else {
            throw VMSessionError(.notFound, "There is no session \(id).")
        }
        let all = try storeCall { try store.snapshots(of: nil) }
        if all.contains(where: { $0.session == id && $0.snapshot.name == name }) {
            throw VMSessionError(.invalidState, "The session already has a snapshot '\(name)'; delete it first or choose another name.")
        }
        try quota.checkSnapshot(
            of: id, by: client, memoryMiB: memoryMiB,
            existing: all.map { SessionQuota.SnapshotHolding(session: $0.session, client: $0.client, bytes: $0.snapshot.bytes) })
        return client
    }

    /// The session's ready snapshot `name`, or `not_found` saying which it has.
    private func existing(_ name: String, on id: SessionID) throws(VMSessionError) -> VMSnapshot {
        let own = try storeCall { try store.snapshots(of: id) }.filter { $0.status == .ready }
        guard let found = own.first(where: { $0.snapshot.name == name }) else {
            let names = own.map(\.snapshot.name)
            throw VMSessionError(
                .notFound, "The session has no snapshot '\(name)' (\(names.isEmpty ? "it has none" : "it has: " + names.joined(separator: ", "))).")
        }
        return found.snapshot
    }

    static func event(_ kind: SessionEvent.Kind, _ snapshot: VMSnapshot) -> (SessionEvent.Kind, String) {
        let payload: SessionEvent.SnapshotChanged =
            kind == .snapshotDeleted
            ? .init(name: snapshot.name) : .init(name: snapshot.name, state: snapshot.state, bytes: snapshot.bytes)
        return (kind, SessionEvent.encode(payload))
    }
}
