import Synchronization
import VMSessionContext
import VMSessionCore
import VMSessionHypervisor

/// A `Hypervisor` that tests script: it keeps each VM's status in memory, records every call, and can
/// fail the next call of a kind, hold a call at a gate until the test opens it (after its effect, so that
/// the test can change the VM while the daemon's action is still under way), and change a VM on its own
/// with an event on ``changes``. For logic and races only; every feature is also tested against libvirt.
public actor ScriptedHypervisor: Hypervisor {
    /// The kinds of call, for failures, gates and the call log.
    public enum Call: String, Sendable, Hashable {
        case define, start, pause, resume, reset, stop, hibernate, remove, setExecutionCap
        case snapshot, revert, deleteSnapshot
    }

    public nonisolated let description = HypervisorDescription(
        uri: "scripted:///", driver: "scripted", accelerator: "none", supportsExecutionCap: true)
    public nonisolated let changes: AsyncStream<SessionID>
    private let changesContinuation: AsyncStream<SessionID>.Continuation

    public private(set) var machines: [SessionID: MachineStatus] = [:]
    public private(set) var specs: [SessionID: MachineSpec] = [:]
    public private(set) var calls: [(Call, SessionID)] = []
    /// Stale state to report from ``repairInterrupted()`` (it clears the saved flag of a live VM).
    public private(set) var savedBesideProcess: Set<SessionID> = []
    /// Each VM's snapshots: the status each one brings back, and the bytes it reports.
    public private(set) var snapshots: [SessionID: [String: MachineStatus]] = [:]
    /// The bytes each snapshot reports taking.
    public var snapshotBytes: Int64 = 64 << 20
    private var failures: [Call: [VMSessionError]] = [:]
    private var gates: [Call: Gate] = [:]

    /// Why this hypervisor's VMs get no guest network (as a remote host without passt says), or nil: they get one.
    public nonisolated let guestNetworkRefusal: String?

    public init(machines: [SessionID: MachineStatus] = [:], guestNetworkRefusal: String? = nil) {
        self.machines = machines
        self.guestNetworkRefusal = guestNetworkRefusal
        (changes, changesContinuation) = AsyncStream.makeStream(of: SessionID.self)
    }

    public nonisolated var guestNetworkOffer: GuestNetworkOffer { GuestNetworkOffer(unavailability: guestNetworkRefusal) }

    // MARK: Script

    /// The next `call` throws `error` (before any effect).
    public func failNext(_ call: Call, with error: VMSessionError) {
        failures[call, default: []].append(error)
    }

    /// The next `call` waits, after its effect, until the returned gate is opened.
    public func hold(_ call: Call) -> Gate {
        let gate = Gate()
        gates[call] = gate
        return gate
    }

    /// Changes a VM on its own (the guest powered off, qemu died, someone used virsh) and says so on ``changes``.
    public func set(_ id: SessionID, to status: MachineStatus, announce: Bool = true) {
        machines[id] = status
        if announce { changesContinuation.yield(id) }
    }

    /// Marks a running VM as also having a hibernation image (a hibernate killed half-way).
    public func leaveSavedImage(beside id: SessionID) {
        savedBesideProcess.insert(id)
    }

    public func callCount(_ call: Call) -> Int { calls.filter { $0.0 == call }.count }

    // MARK: Hypervisor

    public func define(_ spec: MachineSpec) async throws(VMSessionError) {
        try await perform(.define, spec.id) {
            specs[spec.id] = spec
            // Like libvirt, a redefinition keeps the VM's state (and the reason it last stopped).
            if machines[spec.id] == nil { machines[spec.id] = .shutOff(reason: .neverStarted, hasSavedState: false) }
        }
    }

    public func start(_ id: SessionID) async throws(VMSessionError) {
        try await perform(.start, id) { () throws(VMSessionError) in
            guard case .shutOff = machines[id] ?? .absent else {
                throw VMSessionError(.invalidState, "Could not start the VM: it is \(machines[id] ?? .absent).")
            }
            machines[id] = .running
        }
    }

    public func pause(_ id: SessionID) async throws(VMSessionError) {
        try await perform(.pause, id) { () throws(VMSessionError) in
            guard machines[id] == .running else { throw VMSessionError(.invalidState, "Could not pause: \(machines[id] ?? .absent)") }
            machines[id] = .paused(reason: "by request")
        }
    }

    public func resume(_ id: SessionID) async throws(VMSessionError) {
        try await perform(.resume, id) { () throws(VMSessionError) in
            guard case .paused = machines[id] ?? .absent else {
                throw VMSessionError(.invalidState, "Could not resume: \(machines[id] ?? .absent)")
            }
            machines[id] = .running
        }
    }

    public func reset(_ id: SessionID) async throws(VMSessionError) {
        try await perform(.reset, id) {}
    }

    public func stop(_ id: SessionID, grace: Duration) async throws(VMSessionError) {
        try await perform(.stop, id) { machines[id] = .shutOff(reason: .guestShutdown, hasSavedState: savedBesideProcess.contains(id)) }
    }

    public func hibernate(_ id: SessionID) async throws(VMSessionError) {
        try await perform(.hibernate, id) { machines[id] = .shutOff(reason: .saved, hasSavedState: true) }
    }

    public func remove(_ id: SessionID) async throws(VMSessionError) {
        try await perform(.remove, id) {
            machines[id] = nil
            specs[id] = nil
            snapshots[id] = nil
        }
    }

    public func setExecutionCap(_ cap: ExecutionCap, for id: SessionID) async throws(VMSessionError) {
        try await perform(.setExecutionCap, id) {}
    }

    public func appliedExecutionCap(of id: SessionID) async throws(VMSessionError) -> ExecutionCap? { nil }

    public func status(of id: SessionID) async throws(VMSessionError) -> MachineStatus { machines[id] ?? .absent }

    public func allMachines() async throws(VMSessionError) -> [SessionID: MachineStatus] {
        machines.filter { $0.value != .absent }
    }

    public func cpuTime(of id: SessionID) async throws(VMSessionError) -> UInt64? { nil }

    /// What ``machineStats()`` reports; nil: it never answers (a stuck libvirt), until it is cancelled.
    public private(set) var stats: [SessionID: MachineStats]? = [:]
    public func setStats(_ stats: [SessionID: MachineStats]?) { self.stats = stats }

    public func machineStats() async throws -> [SessionID: MachineStats] {
        guard let stats else {
            try await Task.sleep(for: .seconds(3600))
            return [:]
        }
        return stats
    }

    public func repairInterrupted() async throws(VMSessionError) -> [String] {
        defer { savedBesideProcess = [] }
        return savedBesideProcess.map { "removed the stale hibernation image of \($0)" }
    }

    public func createSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) -> Int64 {
        try await perform(.snapshot, id) { () throws(VMSessionError) in
            let status = machines[id] ?? .absent
            if case .paused = status {} else if status != .running {
                throw VMSessionError(.invalidState, "Could not take a snapshot: \(status)")
            }
            guard snapshots[id]?[name] == nil else { throw VMSessionError(.invalidState, "snapshot '\(name)' exists") }
            snapshots[id, default: [:]][name] = status
        }
        return snapshotBytes
    }

    public func revertToSnapshot(_ name: String, of id: SessionID, paused: Bool) async throws(VMSessionError) {
        try await perform(.revert, id) { () throws(VMSessionError) in
            guard snapshots[id]?[name] != nil else { throw VMSessionError(.notFound, "no snapshot '\(name)'") }
            machines[id] = paused ? .paused(reason: "from snapshot") : .running
        }
    }

    public func deleteSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) {
        try await perform(.deleteSnapshot, id) { snapshots[id]?[name] = nil }
    }

    public func snapshotNames(of id: SessionID) async throws(VMSessionError) -> [String] {
        snapshots[id].map { Array($0.keys) } ?? []
    }

    /// Gives a VM a snapshot the daemon did not take (left by a run killed half-way).
    public func addSnapshot(_ name: String, of id: SessionID, status: MachineStatus = .running) {
        snapshots[id, default: [:]][name] = status
    }

    // MARK: Plumbing

    private func perform(_ call: Call, _ id: SessionID, _ effect: () throws(VMSessionError) -> Void) async throws(VMSessionError) {
        calls.append((call, id))
        if var queued = failures[call], !queued.isEmpty {
            let error = queued.removeFirst()
            failures[call] = queued
            throw error
        }
        try effect()
        if let gate = gates.removeValue(forKey: call) {
            do { try await gate.pass() } catch { throw VMSessionError(.controlFailed, "\(call.rawValue) was cancelled", cause: error) }
        }
    }
}

/// Where a scripted call waits: the test awaits ``reached()`` (the call got there), changes what it
/// wants, then ``open()``s it. A cancelled waiter throws `CancellationError`.
public final class Gate: Sendable {
    private struct State {
        var isOpen = false
        var arrived = false
        var watchers: [CheckedContinuation<Void, Never>] = []
        var passers: [Int: CheckedContinuation<Void, any Error>] = [:]
        var next = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Returns once a call waits at the gate.
    public func reached() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state in
                if state.arrived { return true }
                state.watchers.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    public func open() {
        let passers = state.withLock { state in
            state.isOpen = true
            defer { state.passers = [:] }
            return Array(state.passers.values)
        }
        for passer in passers { passer.resume() }
    }

    func pass() async throws {
        let (watchers, id, isOpen) = state.withLock { state in
            state.arrived = true
            defer { state.watchers = []; state.next += 1 }
            return (state.watchers, state.next, state.isOpen)
        }
        for watcher in watchers { watcher.resume() }
        if isOpen { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let refuse: (any Error)?? = state.withLock { state in
                    if state.isOpen { return .some(nil) }
                    if Task.isCancelled { return .some(CancellationError()) }
                    state.passers[id] = continuation
                    return nil
                }
                if let refuse { if let error = refuse { continuation.resume(throwing: error) } else { continuation.resume() } }
            }
        } onCancel: {
            state.withLock { $0.passers.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }
}
