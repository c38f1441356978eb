import Dispatch
import Libvirt
import Logging
import VMSessionCore

/// What the local and the remote hypervisor share of talking to libvirt: every blocking call runs on a
/// dispatch queue (never on Swift concurrency's small cooperative pool) and libvirt's error becomes ours.
/// ``LibvirtHypervisor`` (one libvirt of this machine) and ``RemoteLibvirtHypervisor`` (one remote host's)
/// both conform, so a domain verb is spelled once.
protocol LibvirtCaller: Sendable {
    var connection: Connection { get }
    var queue: DispatchQueue { get }
}

extension LibvirtCaller {
    /// Runs a blocking libvirt call off the cooperative pool and turns libvirt's error into ours.
    func call<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Connection) throws -> T) async throws(VMSessionError) -> T {
        let connection = self.connection
        let result: Result<T, any Error> = await withCheckedContinuation { continuation in
            queue.async {
                continuation.resume(returning: Result { try body(connection) })
            }
        }
        switch result {
        case .success(let value): return value
        case .failure(let error as LibvirtError):
            let code: VMSessionError.Code =
                error.isUnsupported ? .notSupported : (error.isInvalidOperation ? .invalidState : .hypervisorError)
            throw VMSessionError(code, "Could not \(what): \(error.message)", cause: error)
        case .failure(let error as VMSessionError):
            throw error
        case .failure(let error):
            throw VMSessionError(.hypervisorError, "Could not \(what).", cause: error)
        }
    }

    func destroyIfActive(_ id: SessionID) async throws(VMSessionError) {
        try await call("power off the VM") { connection in
            guard let domain = try connection.domain(named: id.machineName), try domain.state().isActive else { return }
            do {
                try domain.destroy()
            } catch let error as LibvirtError where error.isInvalidOperation {
                // It stopped between the look and the destroy (a remote host's libvirtd, just restarted, found
                // its QEMU gone while the daemon removed a leftover): what was asked for.
                if try domain.state().isActive { throw error }
            }
        }
    }

    func withDomain(_ id: SessionID, _ what: String, _ body: @escaping @Sendable (Domain) throws -> Void) async throws(VMSessionError) {
        try await call(what) { connection in
            guard let domain = try connection.domain(named: id.machineName) else {
                throw VMSessionError(.notFound, "Could not \(what): the VM \(id.machineName) is not defined.")
            }
            try body(domain)
        }
    }

    /// The session-level status of the VM of `id` (absent if it is not defined).
    func domainStatus(of id: SessionID) async throws(VMSessionError) -> MachineStatus {
        try await call("read the VM's state") { connection in
            guard let domain = try connection.domain(named: id.machineName) else { return .absent }
            return try LibvirtHypervisor.status(of: domain)
        }
    }

    /// The status of every VM of the connection that belongs to a session.
    func allDomainStatuses() async throws(VMSessionError) -> [SessionID: MachineStatus] {
        try await call("list the VMs") { connection in
            var result: [SessionID: MachineStatus] = [:]
            for domain in try connection.allDomains() {
                guard let id = SessionID(machineName: domain.name) else { continue }
                result[id] = try LibvirtHypervisor.status(of: domain)
            }
            return result
        }
    }

    func domainCPUTime(of id: SessionID) async throws(VMSessionError) -> UInt64? {
        try await call("read the VM's CPU time") { connection in
            guard let domain = try connection.domain(named: id.machineName) else { return nil }
            return try domain.cpuTime()
        }
    }
}

extension LibvirtCaller {
    /// Asks the guest of `id` to power off and pulls the plug if it has not within `grace`; `release` runs
    /// once the VM has no process (what the hypervisor holds for a running VM: its cgroup, its network).
    func powerOff(
        _ id: SessionID, grace: Duration, logger: Logger, release: @Sendable () async -> Void
    ) async throws(VMSessionError) {
        let clock = ContinuousClock()
        let deadline = clock.now + grace
        switch try await domainStatus(of: id) {
        case .running:
            // A guest that ignores ACPI still gets powered off below.
            try? await withDomain(id, "ask the guest to power off") { try $0.shutdown() }
        case .paused:
            // A paused guest cannot see the ACPI button, so waiting would always cost the whole grace. It is
            // woken to power off cleanly (its disk outlives the stop); if it cannot be woken, it is powered
            // off at once.
            do {
                try await withDomain(id, "resume the VM to power it off") { try $0.resume() }
                try? await withDomain(id, "ask the guest to power off") { try $0.shutdown() }
            } catch {
                logger.info("paused guest could not be woken; powering off", metadata: ["session": "\(id)", "error": "\(error)"])
                try await destroyIfActive(id)
                await release()
                return
            }
        case .suspendedByGuest, .unknown:
            // Asleep or unknown: no ACPI request can be seen.
            try await destroyIfActive(id)
            await release()
            return
        default:
            break
        }
        while clock.now < deadline {
            switch try await domainStatus(of: id) {
            case .running, .paused, .shuttingDown: try? await Task.sleep(for: .milliseconds(200))
            default:
                await release()
                return
            }
        }
        logger.info("guest did not power off in time; powering off", metadata: ["session": "\(id)"])
        try await destroyIfActive(id)
        await release()
    }
}

extension LibvirtCaller {
    /// The VM's screen as PNG, read through libvirt's screenshot stream (local or over the remote protocol).
    func screenshotPNG(of id: SessionID) async throws(VMSessionError) -> [UInt8] {
        let shot = try await call("take a screenshot") { connection in
            guard let domain = try connection.domain(named: id.machineName) else {
                throw VMSessionError(.notFound, "Could not take a screenshot: the VM \(id.machineName) is not defined.")
            }
            return try domain.screenshot()
        }
        // Encoding a full screen takes a few milliseconds of CPU: not on the cooperative pool either.
        return try await call("encode the screenshot") { _ in try ScreenshotImage.png(from: shot.data, mimeType: shot.mimeType) }
    }
}
