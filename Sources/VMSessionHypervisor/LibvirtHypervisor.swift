import Dispatch
import Foundation
import Libvirt
import Logging
import Synchronization
import VMSessionContext
import VMSessionCore

/// The hypervisor over libvirt: by default the embedded QEMU driver rooted in the daemon's state
/// directory (no libvirtd needed), or any libvirt URI.
///
/// libvirt calls block, so each one runs on a dispatch queue rather than on Swift concurrency's small
/// cooperative pool. Lifecycle events arrive on libvirt's event-loop thread and are passed on as
/// ``changes``.
public final class LibvirtHypervisor: Hypervisor, LibvirtCaller {
    /// How to reach libvirt and where VM files live.
    public struct Configuration: Sendable {
        /// A libvirt URI, or nil for the embedded QEMU driver rooted at `<stateDirectory>/libvirt`.
        public var uri: String?
        /// The daemon's state directory; VM disks go under `machines/`.
        public var stateDirectory: String
        public var accelerator: Accelerator
        /// How caps are applied: `auto` (libvirt if privileged, else a cgroup), `libvirt`, `cgroup` or `none`.
        public var capMechanism: String
        /// A cgroup (v1 `cpu` or v2 with `cpu` delegated) to make the VMs' cgroups in, instead of the daemon's own.
        public var cgroupDirectory: String?
        /// For drivers that run no QEMU (`test:///default`): the loopback port of a stand-in server that plays
        /// a session's guest API. QEMU guests are always reached through their ``GuestNetwork``.
        public var standInGuestAPIPort: (@Sendable (SessionID) -> Int?)?

        public init(
            uri: String? = nil, stateDirectory: String, accelerator: Accelerator = .auto, capMechanism: String = "auto",
            cgroupDirectory: String? = nil, standInGuestAPIPort: (@Sendable (SessionID) -> Int?)? = nil
        ) {
            self.standInGuestAPIPort = standInGuestAPIPort
            self.uri = uri
            self.stateDirectory = stateDirectory
            self.accelerator = accelerator
            self.capMechanism = capMechanism
            self.cgroupDirectory = cgroupDirectory
        }

        var embeddedRoot: String { stateDirectory + "/libvirt" }
        var resolvedURI: String { uri ?? "qemu:///embed?root=\(embeddedRoot)" }
    }

    public let description: HypervisorDescription
    /// How the daemon runs and caps VMs (chosen once, here).
    public let mode: DaemonMode
    let capMechanism: any CapMechanism
    public let changes: AsyncStream<SessionID>
    let connection: Connection
    let configuration: Configuration
    let logger: Logger
    private let changesContinuation: AsyncStream<SessionID>.Continuation
    private let eventHandlerID: Int32
    let queue = DispatchQueue(label: "vmsessiond.libvirt", attributes: .concurrent)
    /// Set while a bulk statistics call is inside libvirt (see ``machineStats()``).
    let statsInFlight = Atomic<Bool>(false)
    /// Each QEMU guest's network sandbox (nil for drivers that run no QEMU).
    let network: GuestNetwork?
    /// Sessions whose VM is being started: a late "stopped" event must not take their new network down.
    let starting = SessionSet()

    public init(configuration: Configuration, logger: Logger) throws(VMSessionError) {
        self.configuration = configuration
        self.logger = logger
        if configuration.uri == nil {
            try Self.prepareEmbeddedRoot(configuration.embeddedRoot)
            // The daemon holds the state directory's lock, so no libvirt is using this root: what a killed
            // daemon left half-started is settled before libvirt loads it (see EmbeddedRootRepair).
            for repair in EmbeddedRootRepair.repair(root: configuration.embeddedRoot) {
                logger.notice("repaired libvirt's state after an interrupted run", metadata: ["repair": "\(repair)"])
            }
        }
        do {
            connection = try Connection(uri: configuration.resolvedURI)
        } catch {
            throw VMSessionError(
                .hypervisorError, "Cannot connect to libvirt at \(configuration.resolvedURI): \(error.message)", cause: error)
        }
        let driver = (try? connection.driverName()) ?? "unknown"
        guard let preference = CapMechanismChoice.Preference(rawValue: configuration.capMechanism) else {
            throw VMSessionError(
                .invalidArgument, "capMechanism must be auto, libvirt, cgroup or none; got '\(configuration.capMechanism)'.")
        }
        capMechanism = try CapMechanismChoice.choose(
            driver: driver, uri: configuration.resolvedURI, preference: preference, cgroupDirectory: configuration.cgroupDirectory)
        mode = DaemonMode(
            mode: geteuid() == 0 ? "system" : "user", libvirt: DaemonMode.libvirtKind(of: configuration.resolvedURI),
            capMechanism: capMechanism.kind, capDetail: capMechanism.detail)
        description = HypervisorDescription(
            uri: configuration.resolvedURI, driver: driver,
            accelerator: driver == "QEMU" ? configuration.accelerator.resolved().rawValue : "none",
            supportsExecutionCap: capMechanism.kind != .none, version: try? connection.hypervisorVersion())
        (changes, changesContinuation) = AsyncStream.makeStream(of: SessionID.self, bufferingPolicy: .bufferingNewest(1024))
        let stateDirectory = configuration.stateDirectory
        let network = driver == "QEMU" ? GuestNetwork(directory: { Self.networkDirectory(stateDirectory: stateDirectory, id: $0) }) : nil
        self.network = network
        let continuation = changesContinuation
        let logger = logger
        let queue = queue
        let starting = starting
        let connection = connection
        do {
            eventHandlerID = try connection.addLifecycleHandler { event in
                guard let id = SessionID(machineName: event.domainName) else { return }
                logger.debug("libvirt event", metadata: ["session": "\(id)", "event": "\(event)"])
                continuation.yield(id)
                // A VM that stopped on its own (the guest powered off, QEMU died) has no use for its network.
                if let network, event.eventName == "stopped" {
                    queue.async { Self.releaseNetworkIfStopped(id, network: network, connection: connection, starting: starting) }
                }
            }
        } catch {
            throw VMSessionError(.hypervisorError, "Cannot subscribe to libvirt events: \(error.message)", cause: error)
        }
        // VMs that kept running while the daemon was away keep their caps; leftovers of the others go, and so
        // do the networks of VMs that stopped meanwhile. One listing, one state read per VM.
        if let all = try? connection.allDomains().filter({ SessionID(machineName: $0.name) != nil }) {
            let active = all.map { (try? $0.state().isActive) == true }
            capMechanism.reattach(running: zip(all, active).filter(\.1).map(\.0))
            for (domain, isActive) in zip(all, active) where !isActive {
                if let network, let id = SessionID(machineName: domain.name) { network.down(id) }
            }
            // A warm open (which starts the network beside the disk, see defineFromTemplate) killed before it
            // defined the VM leaves a network of no VM: it goes too.
            if let network {
                let defined = Set(all.compactMap { SessionID(machineName: $0.name) })
                let directories = (try? FileManager.default.contentsOfDirectory(atPath: stateDirectory + "/machines")) ?? []
                for id in directories.compactMap({ SessionID($0) }) where !defined.contains(id) { network.down(id) }
            }
        }
    }

    /// The local sandbox (``GuestNetwork``) runs for QEMU guests; a driver that runs no QEMU (libvirt's test driver)
    /// has guests only where a stand-in plays their API.
    public var guestNetworkOffer: GuestNetworkOffer {
        if network != nil || configuration.standInGuestAPIPort != nil { return .available }
        return .unavailable(
            "libvirt's \(description.driver) driver at \(description.uri) runs no QEMU: its VMs get no network (egress sandbox and guest API).")
    }

    /// A session's: its host's where QEMU runs. A driver that runs no QEMU (libvirt's test driver) still defines its
    /// sessions as if they had a network (an egress policy recorded, their guest API probed at the socket where the
    /// sandbox would put it), so that tests can serve a stand-in guest there (`Tests/Browser/standin_guest.py`);
    /// its host view says that it gives none (``guestNetworkOffer``).
    public func guestNetworkOffer(for id: SessionID) -> GuestNetworkOffer {
        network == nil ? .available : guestNetworkOffer
    }

    /// Takes a session's network down if its VM has no process (and is not being started right now).
    private static func releaseNetworkIfStopped(
        _ id: SessionID, network: GuestNetwork, connection: Connection, starting: SessionSet
    ) {
        guard !starting.contains(id) else { return }
        guard let domain = try? connection.domain(named: id.machineName), (try? domain.state().isActive) == false else { return }
        network.down(id)
    }

    /// A set of sessions shared with libvirt's event thread.
    final class SessionSet: Sendable {
        private let ids = Mutex<Set<SessionID>>([])
        func insert(_ id: SessionID) { ids.withLock { _ = $0.insert(id) } }
        func remove(_ id: SessionID) { ids.withLock { _ = $0.remove(id) } }
        func contains(_ id: SessionID) -> Bool { ids.withLock { $0.contains(id) } }
    }

    /// `<machine directory>/network` when its sockets' paths are short enough for passt (see
    /// ``GuestNetwork/maximumSocketPath``), else `/tmp/vmsessiond-<uid>/<session>.net` (as for the console's and
    /// display's sockets): a user's state directory under a long home would otherwise break the network.
    static func networkDirectory(stateDirectory: String, id: SessionID) -> String {
        let beside = "\(stateDirectory)/machines/\(id)/network"
        if (beside + "/" + GuestNetwork.netSocket).utf8.count <= GuestNetwork.maximumSocketPath { return beside }
        return shortSocketDirectory + "/\(id).net"
    }

    deinit {
        connection.removeLifecycleHandler(eventHandlerID)
        changesContinuation.finish()
    }

    /// The embedded driver reads `<root>/etc/qemu.conf`. There is no virtlogd, so QEMU writes its own logs,
    /// and QEMU runs as the daemon's own user.
    static func prepareEmbeddedRoot(_ root: String) throws(VMSessionError) {
        let user = String(cString: getpwuid(geteuid())?.pointee.pw_name ?? strdup("root"))
        let group = String(cString: getgrgid(getegid())?.pointee.gr_name ?? strdup("root"))
        let conf = """
            # Written by vmsessiond at every start for libvirt's embedded QEMU driver; edits are overwritten.
            user = "\(user)"
            group = "\(group)"
            stdio_handler = "file"
            dynamic_ownership = 0
            remember_owner = 0

            """
        do {
            try FileManager.default.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
            try conf.write(toFile: root + "/etc/qemu.conf", atomically: true, encoding: .utf8)
        } catch {
            throw VMSessionError(.ioError, "Cannot prepare libvirt's directory \(root).", cause: error)
        }
    }

    // MARK: Files

    /// Where a session's VM files live: disk, seed, serial console log.
    public func machineDirectory(for id: SessionID) -> String {
        "\(configuration.stateDirectory)/machines/\(id)"
    }

    /// Everything the guest wrote to its serial port, across every start and restore (QEMU appends to it).
    public func consoleLogPath(for id: SessionID) -> String { machineDirectory(for: id) + "/console.log" }

    /// The VM's NoCloud seed drive: its user-data and meta-data (absent for a VM started without user-data).
    public func seedPath(for id: SessionID) -> String { machineDirectory(for: id) + "/seed.iso" }

    // MARK: Hypervisor

    public func define(_ spec: MachineSpec) async throws(VMSessionError) {
        let directory = machineDirectory(for: spec.id)
        let diskPath = directory + "/disk.qcow2"
        let seedPath = seedPath(for: spec.id)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw VMSessionError(.ioError, "Cannot create the VM directory \(directory).", cause: error)
        }
        if !FileManager.default.fileExists(atPath: diskPath) {
            var arguments = ["create", "-q", "-f", "qcow2"]
            var bytes = Int64(spec.diskMiB) << 20
            if case .disk(let backing, let format) = spec.image {
                arguments += ["-b", backing, "-F", format]
                // At least the image's own size: a shorter overlay would cut off the end of its disk.
                bytes = max(bytes, try await DiskImageInspector.virtualSize(backing))
            }
            arguments += [diskPath, "\(bytes)"]
            try await ExternalCommand.run("qemu-img", arguments)
        }
        if let seed = spec.seed {
            try await replaceSeed(seed, for: spec.id)
        } else {
            try? FileManager.default.removeItem(atPath: seedPath)
        }
        var networkSocketPath: String?
        if let network {
            if let egress = spec.egress {
                // A network directory under the short socket directory needs that one to be ours (mode 0700).
                _ = try prepareSocket(network.directory(spec.id))
                try network.prepare(spec.id, policy: egress)
                networkSocketPath = network.netSocketPath(for: spec.id)
            } else {
                network.remove(spec.id)
            }
        }
        let xml = try DomainXML(
            spec: spec, accelerator: configuration.accelerator, diskPath: diskPath,
            seedPath: spec.seed == nil ? nil : seedPath, consolePath: consoleLogPath(for: spec.id),
            consoleSocketPath: try prepareSocket(consoleSocketPath(for: spec.id)),
            displaySocketPath: try prepareSocket(displaySocketPath(for: spec.id)),
            networkSocketPath: networkSocketPath,
            seedSignalSocketPath: try prepareSocket(seedSignalSocketPath(for: spec.id))
        ).render()
        try await call("define the VM") { connection in _ = try connection.defineDomain(xml: xml) }
    }

    public func start(_ id: SessionID) async throws(VMSessionError) {
        var times = StepTimes()
        await releaseCap(id)  // a cgroup left by a VM that powered off on its own
        times.lap("releaseCap")
        starting.insert(id)
        defer { starting.remove(id) }
        // The guest's network comes up first: QEMU connects to it as it starts (or restores).
        try await network?.up(id)
        times.lap("network")
        do {
            try await withDomain(id, "start the VM") { try $0.start() }
            times.lap("libvirtStart")
            logger.debug("VM started (booted, or restored from hibernation)", metadata: times.metadata(["session": "\(id)"]))
        } catch {
            await releaseNetworkAfterFailedStart(id)
            throw error
        }
    }

    /// After a start or restore that failed: takes the guest's network down, unless a VM still runs on it.
    func releaseNetworkAfterFailedStart(_ id: SessionID) async {
        guard let network else { return }
        switch try? await status(of: id) {
        case .running, .paused, .shuttingDown, .suspendedByGuest: break
        default: network.down(id)
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
        let network = network
        try await powerOff(id, grace: grace, logger: logger) {
            await releaseCap(id)
            network?.down(id)
        }
    }

    /// Saves the VM's memory to libvirt's managed-save image and ends its QEMU and its network helpers: a
    /// hibernated session holds no process and no memory (passt and pasta cost about 39 MiB private), and its
    /// restore starts a new network sandbox (a few hundred ms on a busy machine; see the README).
    public func hibernate(_ id: SessionID) async throws(VMSessionError) {
        var times = StepTimes()
        try await withDomain(id, "hibernate the VM") { try $0.managedSave() }
        times.lap("libvirtManagedSave")
        await releaseCap(id)
        network?.down(id)
        times.lap("release")
        logger.debug("VM hibernated", metadata: times.metadata(["session": "\(id)"]))
    }

    public func remove(_ id: SessionID) async throws(VMSessionError) {
        try await destroyIfActive(id)
        await releaseCap(id)
        network?.remove(id)
        try await call("remove the VM") { connection in
            try connection.domain(named: id.machineName)?.undefine()
        }
        let directory = machineDirectory(for: id)
        do {
            if FileManager.default.fileExists(atPath: directory) { try FileManager.default.removeItem(atPath: directory) }
        } catch {
            throw VMSessionError(.deletionFailed, "The VM is gone but its files in \(directory) could not be deleted.", cause: error)
        }
        try? FileManager.default.removeItem(atPath: displaySocketPath(for: id))
        try? FileManager.default.removeItem(atPath: consoleSocketPath(for: id))
        try? FileManager.default.removeItem(atPath: seedSignalSocketPath(for: id))
        if configuration.uri == nil {
            // QEMU's own log of the VM (stdio_handler = "file"); it names the VM, so it goes with it.
            try? FileManager.default.removeItem(atPath: "\(configuration.embeddedRoot)/log/qemu/\(id.machineName).log")
        }
    }

    public func setExecutionCap(_ cap: ExecutionCap, for id: SessionID) async throws(VMSessionError) {
        let mechanism = capMechanism
        if mechanism.kind == .none && cap != .unlimited { throw VMSessionError(.notSupported, mechanism.detail) }
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

    /// Lets the cap mechanism drop what it made for a VM whose process is gone (its cgroup).
    func releaseCap(_ id: SessionID) async {
        let mechanism = capMechanism
        try? await call("release the VM's cgroup") { _ in mechanism.release(machine: id.machineName) }
    }

    public func status(of id: SessionID) async throws(VMSessionError) -> MachineStatus {
        try await domainStatus(of: id)
    }

    public func allMachines() async throws(VMSessionError) -> [SessionID: MachineStatus] {
        try await allDomainStatuses()
    }

    public func repairInterrupted() async throws(VMSessionError) -> [String] {
        let network = network
        return try await call("look for stale hibernation images") { connection in
            var repairs: [String] = []
            for domain in try connection.allDomains() where SessionID(machineName: domain.name) != nil {
                // A start or restore (from hibernation or a template) killed half-way leaves a QEMU paused
                // "starting up" that nobody will ever feed or resume: it goes, and its saved memory (if any)
                // stays for the next start.
                if try domain.state() == .paused(reason: "starting up"), let id = SessionID(machineName: domain.name) {
                    try domain.destroy()
                    network?.down(id)
                    repairs.append("stopped \(domain.name), whose start or restore an interrupted run left half-done")
                    continue
                }
                // A hibernation killed before it stopped the VM leaves its image beside a live process; a
                // later stop would leave the image as the VM's state (old memory over a newer disk).
                guard try domain.state().isActive, try domain.hasManagedSave() else { continue }
                try domain.removeManagedSave()
                repairs.append("removed the stale hibernation image of \(domain.name), which still runs")
            }
            return repairs
        }
    }

    public func cpuTime(of id: SessionID) async throws(VMSessionError) -> UInt64? {
        try await domainCPUTime(of: id)
    }
}
