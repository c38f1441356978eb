import Dispatch
import Foundation
import Libvirt
import Logging
import Synchronization
import VMSessionContext
import VMSessionCore

/// The hypervisor of one remote libvirt host (`qemu+ssh://…`, `qemu+tls://…`), reached over the host monitor's
/// keepalive'd ``HostConnection``: the daemon's router holds one per host beside the local ``LibvirtHypervisor``.
///
/// Why a type of its own rather than a mode of the local one: a remote host shares no file system with the
/// daemon, so what the local hypervisor keeps in files and processes of this machine is reached through
/// libvirt instead. Every file a VM needs goes to the host as a storage volume filled through a stream
/// (``RemoteStorage``); the serial console comes home through libvirt's console stream (``ConsoleRelay``),
/// into a local log and socket, so the daemon's console layer is the same; the screen through libvirt's
/// screenshot stream; the VNC display, on a host reached over SSH, through an SSH forward (``SSHForward``); the
/// guest's network sandbox, on a host reached over SSH, started there through the same SSH master, its API socket
/// forwarded home (``RemoteGuestNetwork``). The domain XML (``DomainXML``), the status mapping and every domain
/// verb are the local hypervisor's own (``LibvirtCaller``).
///
/// Snapshots and templates are libvirt's own calls on the host too (see `RemoteLibvirtHypervisor+Snapshots` and
/// `+Templates`): a snapshot lives inside the session's qcow2 volume, a template's memory image and disk are
/// volumes in the host's pool, and a warm session is restored there.
///
/// What a remote host does not offer (yet), each answered `not_supported` with the reason: the display and a
/// network for the guest (egress sandbox and guest API) on a host not reached over SSH (TLS), one that lacks
/// the sandbox's tools, or a system libvirt whose QEMU the sandbox's socket cannot be opened to alone (see
/// ``RemoteGuestNetwork``; its VMs then have no NIC, whatever their egress policy); execution caps on a session
/// libvirt (its QEMU runs in a user's session, with no cgroup the daemon can reach; a system libvirt uses its
/// scheduler parameters).
public final class RemoteLibvirtHypervisor: Hypervisor, LibvirtCaller {
    public let host: HostDefinition
    public let description: HypervisorDescription
    public let changes: AsyncStream<SessionID>
    let connection: Connection
    /// The host connection's one serial queue: every libvirt call of this hypervisor, its storage and its
    /// console relay runs there, one at a time (see ``HostConnection``: libvirt's RPC client crashes when
    /// several threads make calls on one remote connection).
    let queue: DispatchQueue
    /// The host's pool and volumes.
    let storage: RemoteStorage
    let relay: ConsoleRelay
    let capMechanism: any CapMechanism
    /// The VMs' displays reached through the host's SSH transport; nil for a host reached otherwise (TLS).
    let forward: SSHForward?
    /// This host's local files: per session, the console's log and socket, and scratch for seeds.
    let stateDirectory: String
    let logger: Logger
    private let changesContinuation: AsyncStream<SessionID>.Continuation
    /// The sessions whose VM libvirt reported stopped, for ``followLifecycle()`` (their network helpers go).
    private let stops: AsyncStream<SessionID>
    private let stopsContinuation: AsyncStream<SessionID>.Continuation
    /// Starts against the release of a stopped VM's network (see ``NetworkTurns``).
    let networkTurns = NetworkTurns()
    private let eventHandlerID: Int32
    /// The guests' network sandboxes on the host; nil for a host not reached over SSH (TLS).
    let network: RemoteGuestNetwork?
    /// The host-side display socket of each VM whose display is forwarded now.
    private let displayForwards = Mutex<[SessionID: String]>([:])
    /// The sessions whose VM has a seed volume on the host (read from the pool at start, kept as they change), so
    /// that ``hasSeed(_:)`` needs no call on the connection.
    let seeded = Mutex<Set<SessionID>>([])

    /// Blocks on libvirt calls: run it on the connection's queue (``HostConnection/run(_:)``), as the daemon's
    /// host runtimes do.
    public init(host: HostDefinition, connection: HostConnection, stateDirectory: String, logger: Logger) throws(VMSessionError) {
        self.host = host
        self.connection = connection.connection
        self.queue = connection.queue
        self.stateDirectory = stateDirectory
        var logger = logger
        logger[metadataKey: "host"] = "\(host.name)"
        self.logger = logger
        let libvirt = connection.connection
        let driver: String
        do {
            driver = try libvirt.driverName()
        } catch {
            throw VMSessionError(.unavailable, "Cannot talk to the remote host \(host.name): \(error.message)", cause: error)
        }
        guard driver == "QEMU" else {
            throw VMSessionError(.notSupported, "The remote host \(host.name) runs libvirt's \(driver) driver; only QEMU hosts can run sessions.")
        }
        storage = try RemoteStorage(connection: libvirt, uri: host.uri, queue: connection.queue)
        if RemoteStorage.isSystemURI(host.uri) {
            capMechanism = LibvirtSchedulerCap()
        } else {
            capMechanism = UnavailableCap(
                reason: "execution caps are not available on remote host \(host.name): its session libvirt runs QEMU as a "
                    + "user, with no cgroup the daemon can reach; caps need a system libvirt (…/system)")
        }
        description = HypervisorDescription(
            uri: host.uri, driver: driver, accelerator: Accelerator.tcg.rawValue, supportsExecutionCap: capMechanism.kind != .none,
            version: try? libvirt.hypervisorVersion())
        relay = ConsoleRelay(queue: connection.queue, logger: logger)
        let forward = SSHForward.Target(uri: host.uri).map { SSHForward(target: $0, directory: stateDirectory) }
        self.forward = forward
        network = forward.map { ssh in
            RemoteGuestNetwork(
                ssh: ssh, hostName: host.name, isSystem: RemoteStorage.isSystemURI(host.uri),
                localDirectory: { "\(stateDirectory)/machines/\($0)" }, logger: logger)
        }
        (changes, changesContinuation) = AsyncStream.makeStream(of: SessionID.self, bufferingPolicy: .bufferingNewest(1024))
        (stops, stopsContinuation) = AsyncStream.makeStream(of: SessionID.self, bufferingPolicy: .bufferingNewest(1024))
        do {
            try FileManager.default.createDirectory(atPath: stateDirectory + "/machines", withIntermediateDirectories: true)
        } catch {
            throw VMSessionError(.ioError, "Cannot create the directory \(stateDirectory) for remote host \(host.name).", cause: error)
        }
        let continuation = changesContinuation
        // On libvirt's event thread nothing but a yield: the release is SSH commands (see followLifecycle()).
        let stopped = network == nil ? nil : stopsContinuation
        let eventLogger = logger
        do {
            eventHandlerID = try libvirt.addLifecycleHandler { event in
                guard let id = SessionID(machineName: event.domainName) else { return }
                eventLogger.debug("libvirt event", metadata: ["session": "\(id)", "event": "\(event)"])
                continuation.yield(id)
                if event.eventName == "stopped" { stopped?.yield(id) }
            }
        } catch {
            throw VMSessionError(.hypervisorError, "Cannot subscribe to libvirt events on \(host.name): \(error.message)", cause: error)
        }
        do {
            let seededNow = try storage.seededSessions()
            seeded.withLock { $0 = seededNow }
        } catch {
            throw VMSessionError(.hypervisorError, "Cannot list the volumes on \(host.name): \(error)", cause: error)
        }
        // VMs that kept running while the daemon was away (or the host was unreachable) get their console back.
        if let all = try? libvirt.allDomains() {
            for domain in all {
                guard let id = SessionID(machineName: domain.name), (try? domain.state().isActive) == true else { continue }
                attachConsole(id, domain: domain)
            }
        }
    }

    deinit {
        // Deregistering is a call on the connection: on its queue, like every other.
        let connection = connection
        let eventHandlerID = eventHandlerID
        queue.async { connection.removeLifecycleHandler(eventHandlerID) }
        changesContinuation.finish()
        stopsContinuation.finish()
        relay.detachAll()
    }

    /// While the host is attached (the daemon's host runtimes run it, cancelled when the host goes): a VM that stopped
    /// on its own (the guest powered off, its QEMU died) has no use for its network helpers on the host, so they go at
    /// once, as a local VM's do on libvirt's `stopped` event, rather than at its next start, close or the host's next
    /// connect. Not under a start, restore, capture or revert in flight (``NetworkTurns``), and only when the VM is still
    /// stopped when its turn comes.
    public func followLifecycle() async {
        guard let network else { return }
        for await id in stops {
            guard networkTurns.beginRelease(id) else { continue }
            let stoppedNow: Bool
            do throws(VMSessionError) {
                stoppedNow = try await call("read the VM's state") { connection in
                    guard let domain = try connection.domain(named: id.machineName) else { return false }
                    return try !domain.state().isActive
                }
            } catch {
                stoppedNow = false
            }
            if stoppedNow, network.remoteDirectory(for: id) != nil {
                logger.debug("the VM stopped on its own: its network helpers go", metadata: ["session": "\(id)"])
                await network.down(id)
            }
            networkTurns.endRelease(id)
        }
    }

    /// The accelerator on the host: TCG always. KVM availability on a remote host is not known to the daemon, and
    /// a domain type the host cannot run fails at start; TCG runs everywhere QEMU does.
    var accelerator: Accelerator { .tcg }

    // MARK: Local files

    /// This host's local directory for a session: its console's log (the history) and socket.
    public func machineDirectory(for id: SessionID) -> String { "\(stateDirectory)/machines/\(id)" }

    public func consoleLogPath(for id: SessionID) -> String { machineDirectory(for: id) + "/console.log" }

    /// The relay's socket: beside the log when the path fits a Unix socket, else under the daemon's short
    /// socket directory (as for the local VMs' sockets).
    func consoleSocketPath(for id: SessionID) -> String {
        let beside = machineDirectory(for: id) + "/console.sock"
        if beside.utf8.count <= DomainXML.maximumSocketPath { return beside }
        return LibvirtHypervisor.shortSocketDirectory + "/\(id).remote-console"
    }

    // MARK: Hypervisor

    public func define(_ spec: MachineSpec) async throws(VMSessionError) {
        let directory = machineDirectory(for: spec.id)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw VMSessionError(.ioError, "Cannot create the VM directory \(directory).", cause: error)
        }
        // QEMU's NIC connects to passt's socket on the host (see RemoteGuestNetwork); no network where the host has none.
        let networkSocket = try network?.prepare(spec.id, policy: spec.egress)
        if spec.egress != nil, networkSocket == nil {
            logger.info(
                "the guest gets no network", metadata: ["session": "\(spec.id)", "why": "\(networkUnavailability ?? "")"])
        }
        // What goes to the host: the boot files or the disk image (once per content), the seed (per session).
        var bases: [(path: String, digest: String, role: RemoteVolumes.Role)] = []
        var capacity = UInt64(spec.diskMiB) << 20
        var backingFormat: String?
        switch spec.image {
        case .kernel(let kernel, let initrd, _):
            bases.append((kernel, try await storage.digest(of: kernel), .kernel))
            bases.append((initrd, try await storage.digest(of: initrd), .initrd))
        case .disk(let path, let format):
            bases.append((path, try await storage.digest(of: path), .disk))
            backingFormat = format
            capacity = max(capacity, UInt64(max(0, try await DiskImageInspector.virtualSize(path))))
        }
        let localSeed = try await writeLocalSeed(spec.seed, for: spec.id)
        defer { if let localSeed { try? FileManager.default.removeItem(atPath: localSeed) } }
        let storage = storage
        let connection = connection
        let accelerator = accelerator
        let forward = forward
        let finalBases = bases
        let seedToSend = localSeed
        let diskCapacity = capacity
        let format = backingFormat
        // One step on the connection's queue, so no removal collects a base between its check and the definition.
        try await storage.run("define the VM") {
            var hostPaths: [RemoteVolumes.Role: String] = [:]
            for base in finalBases {
                hostPaths[base.role] = try storage.ensureBase(base.path, digest: base.digest, role: base.role)
            }
            let backing = hostPaths[.disk].map { (path: $0, format: format ?? "raw") }
            let diskPath = try storage.ensureDisk(spec.id, capacity: diskCapacity, backing: backing)
            var seedPath: String?
            if let seedToSend {
                seedPath = try storage.putSeed(spec.id, from: seedToSend)
            } else {
                try storage.removeSeed(spec.id)
            }
            self.seeded.withLock { seeded in
                if seedPath == nil { seeded.remove(spec.id) } else { seeded.insert(spec.id) }
            }
            var hostSpec = spec
            if networkSocket == nil { hostSpec.egress = nil }
            switch spec.image {
            case .kernel(_, _, let commandLine):
                guard let kernel = hostPaths[.kernel], let initrd = hostPaths[.initrd] else {
                    throw VMSessionError(.hypervisorError, "The boot files did not reach the remote host.")
                }
                hostSpec.image = .kernel(kernelPath: kernel, initrdPath: initrd, commandLine: commandLine)
            case .disk(_, let format):
                // The session's disk is the overlay; the domain names the base only through the overlay.
                hostSpec.image = .disk(path: diskPath, format: format)
            }
            let xml = try DomainXML(
                spec: hostSpec, accelerator: accelerator, diskPath: diskPath, seedPath: seedPath, consolePath: nil,
                hostDisplay: forward == nil ? .nowhere : .libvirtSocket, networkSocketPath: networkSocket
            ).render()
            _ = try connection.defineDomain(xml: xml)
        }
    }

    /// Writes `seed` (if any) as an image in the session's local directory, to be sent to the host; returns its path,
    /// which the caller deletes once it is sent.
    func writeLocalSeed(_ seed: ContextSeed?, for id: SessionID) async throws(VMSessionError) -> String? {
        guard let seed else { return nil }
        let directory = machineDirectory(for: id)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw VMSessionError(.ioError, "Cannot create the VM directory \(directory).", cause: error)
        }
        let path = directory + "/seed.iso"
        try await SeedImage.write(seed, to: path, scratch: directory + "/seed")
        return path
    }

    public func start(_ id: SessionID) async throws(VMSessionError) {
        await networkTurns.beginStart(id)
        defer { networkTurns.endStart(id) }
        // The guest's network comes up first: QEMU connects to it as it starts (or restores).
        try await network?.up(id)
        do {
            try await withDomain(id, "start the VM") { try $0.start() }
        } catch {
            // Unless a VM still runs on it, the network goes with the failed start; a host lost meanwhile is settled
            // when it connects again (reconnected()), rather than waited for here.
            guard connection.isAlive else { throw error }
            switch try? await status(of: id) {
            case .running, .paused, .shuttingDown, .suspendedByGuest: break
            default: await network?.down(id)
            }
            throw error
        }
        await bringHome(id)
    }

    /// Brings the console and the display of the VM of `id`, which has just got a new QEMU process (a start, a
    /// restore, a revert that restarted it), home: the relay's stream and the display's forward.
    func bringHome(_ id: SessionID) async {
        let endpoints = consoleEndpoints(of: id)
        let relay = relay
        // The console comes home as soon as the VM runs; a console that cannot be opened leaves the VM running
        // (logged), as a local VM whose console socket failed would.
        do {
            try await call("open the VM's console") { connection in
                guard let domain = try connection.domain(named: id.machineName) else { return }
                try relay.attach(id, domain: domain, endpoints: endpoints)
            }
        } catch {
            logger.warning("the remote VM's console could not be opened", metadata: ["session": "\(id)", "error": "\(error)"])
        }
        await forwardDisplay(id)
    }

    /// Forwards the local display socket of `id` to the one libvirt made for its VM on the host (its path is
    /// in the running VM's XML). A display that cannot be forwarded leaves the VM running (logged).
    func forwardDisplay(_ id: SessionID) async {
        guard let forward else { return }
        do {
            let xml = try await call("read the VM's display") { connection in
                try connection.domain(named: id.machineName)?.xmlDescription() ?? ""
            }
            guard let remote = RemoteVolumes.displaySocket(inDomainXML: xml) else {
                throw VMSessionError(.hypervisorError, "The VM's XML names no display socket.")
            }
            _ = try prepareSocketDirectory(localDisplaySocketPath(for: id))
            try await forward.forward(localDisplaySocketPath(for: id), to: remote)
            displayForwards.withLock { $0[id] = remote }
        } catch {
            logger.warning("the remote VM's display could not be forwarded", metadata: ["session": "\(id)", "error": "\(error)"])
        }
    }

    /// Cancels the display's forward of `id`, if any.
    func stopForwardingDisplay(_ id: SessionID) async {
        guard let forward, let remote = displayForwards.withLock({ $0.removeValue(forKey: id) }) else { return }
        await forward.cancel(localDisplaySocketPath(for: id), to: remote)
    }

    /// Attaches the console relay off the caller's thread (at start-up, for VMs that kept running).
    private func attachConsole(_ id: SessionID, domain: Domain) {
        let relay = relay
        let endpoints = consoleEndpoints(of: id)
        let logger = logger
        queue.async {
            do {
                try relay.attach(id, domain: domain, endpoints: endpoints)
            } catch {
                logger.warning("the remote VM's console could not be opened", metadata: ["session": "\(id)", "error": "\(error)"])
            }
        }
    }

    public func pause(_ id: SessionID) async throws(VMSessionError) {
        try await withDomain(id, "pause the VM") { try $0.suspend() }
    }

    public func resume(_ id: SessionID) async throws(VMSessionError) {
        try await withDomain(id, "resume the VM") { try $0.resume() }
    }

    public func reset(_ id: SessionID) async throws(VMSessionError) {
        try await withDomain(id, "reset the VM") { try $0.reset() }
    }

    public func stop(_ id: SessionID, grace: Duration) async throws(VMSessionError) {
        let relay = relay
        try await powerOff(id, grace: grace, logger: logger) { relay.detach(id) }
        await stopForwardingDisplay(id)
        await network?.down(id)
    }

    /// libvirt's managed save: the memory image stays on the host (in its libvirt's save directory), and the
    /// next ``start(_:)`` restores from it there.
    public func hibernate(_ id: SessionID) async throws(VMSessionError) {
        try await withDomain(id, "hibernate the VM") { try $0.managedSave() }
        relay.detach(id)
        await stopForwardingDisplay(id)
        await network?.down(id)
    }

    /// Powers off, undefines the VM (its saved memory with it), deletes its volumes and every base volume no VM
    /// on the host uses any more, and the session's local files.
    public func remove(_ id: SessionID) async throws(VMSessionError) {
        try await destroyIfActive(id)
        relay.detach(id)
        await stopForwardingDisplay(id)
        do throws(VMSessionError) {
            try await network?.remove(id)
        } catch {
            // What is left (a directory of no VM) goes when the host connects again (reconnected()).
            logger.warning("cannot remove the guest's network on the host", metadata: ["session": "\(id)", "error": "\(error)"])
        }
        try await call("remove the VM") { connection in
            try connection.domain(named: id.machineName)?.undefine()
        }
        let storage = storage
        let templates = templateXMLs()
        let deleted = try await storage.run("delete the VM's volumes") { try storage.removeVolumes(of: id, templates: templates) }
        seeded.withLock { _ = $0.remove(id) }
        logger.debug("volumes deleted", metadata: ["session": "\(id)", "volumes": "\(deleted)"])
        let directory = machineDirectory(for: id)
        do {
            if FileManager.default.fileExists(atPath: directory) { try FileManager.default.removeItem(atPath: directory) }
        } catch {
            throw VMSessionError(.deletionFailed, "The VM is gone but its files in \(directory) could not be deleted.", cause: error)
        }
        try? FileManager.default.removeItem(atPath: consoleSocketPath(for: id))
    }

    public func setExecutionCap(_ cap: ExecutionCap, for id: SessionID) async throws(VMSessionError) {
        let mechanism = capMechanism
        if mechanism.kind == .none {
            if cap == .unlimited { return }
            throw VMSessionError(.notSupported, mechanism.detail)
        }
        try await withDomain(id, "set the execution cap") { try mechanism.apply(cap, to: $0) }
    }

    public func appliedExecutionCap(of id: SessionID) async throws(VMSessionError) -> ExecutionCap? {
        guard description.supportsExecutionCap else { return nil }
        let mechanism = capMechanism
        return try await call("read the execution cap") { connection in
            guard let domain = try connection.domain(named: id.machineName), try domain.state().isActive else { return nil }
            return try mechanism.applied(to: domain)
        }
    }

    public func status(of id: SessionID) async throws(VMSessionError) -> MachineStatus { try await domainStatus(of: id) }

    public func allMachines() async throws(VMSessionError) -> [SessionID: MachineStatus] { try await allDomainStatuses() }

    public func cpuTime(of id: SessionID) async throws(VMSessionError) -> UInt64? { try await domainCPUTime(of: id) }

    public func repairInterrupted() async throws(VMSessionError) -> [String] {
        try await call("look for stale hibernation images") { connection in
            var repairs: [String] = []
            for domain in try connection.allDomains() where SessionID(machineName: domain.name) != nil {
                guard try domain.state().isActive, try domain.hasManagedSave() else { continue }
                try domain.removeManagedSave()
                repairs.append("removed the stale hibernation image of \(domain.name), which still runs")
            }
            return repairs
        }
    }

    // MARK: Console, screen, network

    func consoleEndpoints(of id: SessionID) -> ConsoleEndpoints {
        ConsoleEndpoints(log: consoleLogPath(for: id), socket: consoleSocketPath(for: id))
    }

    /// The relay's log and socket (see ``ConsoleRelay``): the same endpoints a local VM's console has.
    public func console(of id: SessionID) -> ConsoleEndpoints? { consoleEndpoints(of: id) }

    /// Whether the console of `id` is relayed now (its VM runs and the stream is open).
    public func isConsoleRelayed(_ id: SessionID) -> Bool { relay.isAttached(id) }

    /// The local end of the display's SSH forward (see ``SSHForward``); nil on a host not reached over SSH.
    public func displaySocket(of id: SessionID) -> String? { forward == nil ? nil : localDisplaySocketPath(for: id) }

    public func noDisplayReason(of id: SessionID) -> String {
        "The display of a VM on remote host \(host.name) is a socket on that host, which the daemon reaches only through an "
            + "SSH transport (qemu+ssh://); this host is reached over \(URLComponents(string: host.uri)?.scheme ?? "another transport"). "
            + "Screenshots still work."
    }

    /// The display's forward, local end: beside the console when short enough for a forward (``SSHForward/localPath(_:else:)``).
    func localDisplaySocketPath(for id: SessionID) -> String {
        SSHForward.localPath(machineDirectory(for: id) + "/vnc.sock", else: LibvirtHypervisor.shortSocketDirectory + "/\(id).remote-vnc")
    }

    /// Makes the socket's directory (ours alone) and returns the path.
    private func prepareSocketDirectory(_ path: String) throws(VMSessionError) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw VMSessionError(.ioError, "Cannot create the socket directory \(directory).", cause: error)
        }
        return path
    }

    /// The local end of the guest API's SSH forward (see ``RemoteGuestNetwork``), for a VM defined with a network.
    public func guestAPIAddress(of id: SessionID) -> GuestAPIAddress? { network?.apiAddress(of: id) }
    /// The host's, the same for each of its VMs: whether it can run the guests' network sandbox (checked when it
    /// connected: see ``reconnected()``).
    public var guestNetworkOffer: GuestNetworkOffer { GuestNetworkOffer(unavailability: networkUnavailability) }

    private var networkUnavailability: String? {
        guard let network else {
            return "The guest's network (egress sandbox and guest API) is not available on remote host \(host.name): it is reached "
                + "over TLS, and the sandbox's helpers on a host are started (and its API socket reached) only over an SSH transport."
        }
        return network.unavailableReason
    }

    /// Before the host's sessions are reached: checks what the host has for the guests' networks, and brings back
    /// what VMs that kept running need on the daemon's side (the forwards of their API sockets and displays), ends the
    /// network helpers of VMs that stopped meanwhile and removes those of VMs no longer defined.
    public func reconnected() async {
        await removeUnfinishedTemplates()
        guard let network else { return }
        // A system libvirt's QEMU runs as a user of its own: its capabilities say whom, and what confines it.
        var capabilities: String?
        if network.isSystem {
            do throws(VMSessionError) {
                capabilities = try await call("read the host's capabilities") { try $0.capabilities() }
            } catch {
                logger.warning("cannot read the system libvirt's capabilities", metadata: ["error": "\(error)"])
            }
        }
        await network.check(capabilities: capabilities)
        let machines: [SessionID: Bool]
        do throws(VMSessionError) {
            machines = try await call("list the VMs") { connection in
                var found: [SessionID: Bool] = [:]
                for domain in try connection.allDomains() {
                    guard let id = SessionID(machineName: domain.name) else { continue }
                    found[id] = (try? domain.state().isActive) == true
                }
                return found
            }
        } catch {
            logger.warning("cannot list the host's VMs to reconcile their networks", metadata: ["error": "\(error)"])
            return
        }
        await network.reconcile(machines)
        for (id, running) in machines where running { await forwardDisplay(id) }
    }

    public func screenshot(of id: SessionID) async throws(VMSessionError) -> [UInt8] { try await screenshotPNG(of: id) }

    // MARK: For tests and the host's health

    /// The names of the volumes in the daemon's pool on the host.
    public func volumeNames() async throws(VMSessionError) -> [String] {
        let storage = storage
        return try await storage.run("list the volumes") { try storage.volumeNames() }
    }
}
