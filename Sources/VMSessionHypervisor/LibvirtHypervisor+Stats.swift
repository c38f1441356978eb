import Libvirt
import Synchronization
import VMSessionCore

extension LibvirtHypervisor {
    /// The statistics groups the metrics show: CPU, balloon (memory), vCPUs, network cards and disks.
    static let statsGroups: DomainStatsGroups = [.cpuTotal, .balloon, .vcpu, .interface, .block]

    /// Every session VM's statistics from one `virConnectGetAllDomainStats`, as the libvirt exporters read them.
    ///
    /// A scrape must not hang on a stuck libvirt, nor pile up threads behind one: the call runs on the
    /// hypervisor's queue, the caller may stop waiting for it at any time (cancellation returns at once, the
    /// call finishes on its own), and while one call is still inside libvirt no other is started (the second
    /// caller gets `unavailable` at once).
    public func machineStats() async throws -> [SessionID: MachineStats] {
        guard statsInFlight.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            throw VMSessionError(.unavailable, "libvirt has not answered the previous statistics call yet.")
        }
        let connection = connection
        let inFlight = self
        let records: [DomainStatsRecord] = try await abandonableCall { () throws -> [DomainStatsRecord] in
            defer { inFlight.statsInFlight.store(false, ordering: .releasing) }
            do {
                return try connection.allDomainStats(Self.statsGroups, nowait: true)
            } catch {
                // Drivers without the flag (the test driver) refuse it: ask again without.
                return try connection.allDomainStats(Self.statsGroups)
            }
        }
        var result: [SessionID: MachineStats] = [:]
        for record in records {
            guard let id = SessionID(machineName: record.domainName) else { continue }
            result[id] = Self.machineStats(record.fields)
        }
        return result
    }

    /// libvirt's typed fields as ``MachineStats``.
    static func machineStats(_ fields: [String: TypedValue]) -> MachineStats {
        var numbers: [String: Double] = [:]
        var names: [String: String] = [:]
        for (key, value) in fields {
            if case .string(let text) = value { names[key] = text } else if let number = value.number { numbers[key] = number }
        }
        return MachineStats(libvirtFields: numbers, names: names)
    }

    /// Runs `body` on the hypervisor's queue; a cancelled caller stops waiting at once (`CancellationError`)
    /// while `body` runs to its end there.
    func abandonableCall<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let slot = ResultSlot<T>()
        let queue = queue
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, any Error>, Never>) in
                slot.install(continuation)
                queue.async { slot.resolve(Result { try body() }) }
            }
        } onCancel: {
            slot.resolve(.failure(CancellationError()))
        }
        return try result.get()
    }
}

/// A continuation resumed by whichever comes first, the result or a cancellation; later ones are dropped.
/// The lock guards plain data only: the continuation is resumed outside it.
final class ResultSlot<T: Sendable>: Sendable {
    private enum State {
        case empty
        case waiting(CheckedContinuation<Result<T, any Error>, Never>)
        case resolved(Result<T, any Error>)
        case done
    }
    private let state = Mutex(State.empty)

    func install(_ continuation: CheckedContinuation<Result<T, any Error>, Never>) {
        let early = state.withLock { state -> Result<T, any Error>? in
            if case .resolved(let result) = state {
                state = .done
                return result
            }
            state = .waiting(continuation)
            return nil
        }
        if let early { continuation.resume(returning: early) }
    }

    func resolve(_ result: Result<T, any Error>) {
        let waiting = state.withLock { state -> CheckedContinuation<Result<T, any Error>, Never>? in
            switch state {
            case .empty:
                state = .resolved(result)
                return nil
            case .waiting(let continuation):
                state = .done
                return continuation
            case .resolved, .done:
                return nil
            }
        }
        waiting?.resume(returning: result)
    }
}
