import Foundation
import VMSessionContext
import VMSessionCore

/// What the session manager needs from a hypervisor: define, run, control and remove one VM per session,
/// tell its status, and report changes that happen on their own. `LibvirtHypervisor` is the real one;
/// tests may put a fake at this seam for logic, and every feature is also tested against libvirt.
public protocol Hypervisor: Sendable {
    /// What this hypervisor is, for `GET /api/v1` and logs.
    var description: HypervisorDescription { get }

    /// Creates the VM's disks (if missing), writes its seed (if any), and defines (or redefines) it.
    func define(_ spec: MachineSpec) async throws(VMSessionError)
    /// Boots the VM, or restores it when it was hibernated.
    func start(_ id: SessionID) async throws(VMSessionError)
    func pause(_ id: SessionID) async throws(VMSessionError)
    func resume(_ id: SessionID) async throws(VMSessionError)
    /// A hard reset.
    func reset(_ id: SessionID) async throws(VMSessionError)
    /// Asks the guest to power off, and pulls the plug if it has not within `grace`.
    func stop(_ id: SessionID, grace: Duration) async throws(VMSessionError)
    /// Saves memory to disk and stops the VM; ``start(_:)`` restores it.
    func hibernate(_ id: SessionID) async throws(VMSessionError)
    /// Powers off (if needed), undefines the VM and deletes every file it had. Succeeds if nothing is left.
    func remove(_ id: SessionID) async throws(VMSessionError)
    /// Applies an execution cap to the running VM.
    func setExecutionCap(_ cap: ExecutionCap, for id: SessionID) async throws(VMSessionError)
    /// The cap in force on the running VM, read back from the hypervisor; nil if it has no process.
    func appliedExecutionCap(of id: SessionID) async throws(VMSessionError) -> ExecutionCap?
    func status(of id: SessionID) async throws(VMSessionError) -> MachineStatus
    /// The status of every VM that belongs to a session.
    func allMachines() async throws(VMSessionError) -> [SessionID: MachineStatus]
    /// CPU time the VM has used, in nanoseconds, if it runs.
    func cpuTime(of id: SessionID) async throws(VMSessionError) -> UInt64?
    /// Settles what a daemon killed in the middle of an action left in the hypervisor (for libvirt: a
    /// managed-save image beside a VM that still runs). Called once at start-up, before ``allMachines()``;
    /// returns a line per repair, for the log.
    func repairInterrupted() async throws(VMSessionError) -> [String]
    /// Whether calls for `id`'s VM reach its host now. A hypervisor over several hosts says false for a session
    /// whose host is lost: ``allMachines()`` leaves its VM out, and start-up must skip it rather than stop it.
    func reaches(_ id: SessionID) -> Bool
    /// Whether `id`'s VM gets a guest network (the egress sandbox and the guest API) where it runs, and why not. A
    /// host that cannot give one (a remote host reached over TLS, whose sandbox helpers cannot be started through
    /// libvirt, or one without passt and socat) says so, and the session is defined with no network card and no
    /// egress policy, so that its view does not claim one; its guest API then answers `not_supported` with the
    /// reason. By default, its host's ``guestNetworkOffer`` (libvirt's test driver differs: see
    /// ``LibvirtHypervisor/guestNetworkOffer(for:)``).
    func guestNetworkOffer(for id: SessionID) -> GuestNetworkOffer
    /// Whether the VMs of this hypervisor's host get a guest network, and why not: the host view's `guestNetwork`.
    var guestNetworkOffer: GuestNetworkOffer { get }
    /// Called when a remote host's connection opened (the daemon started, or the host returned), before its
    /// sessions' calls are routed to this hypervisor: what its running VMs need beyond libvirt on the daemon's side
    /// (socket forwards, their network sandboxes) comes back, and what VMs that stopped meanwhile left is settled.
    func reconnected() async
    /// The hypervisor's own follow-up of its lifecycle events, run by the daemon's host runtimes while the host is
    /// attached and cancelled when it goes (a remote host's: the network helpers of a VM that stopped on its own go
    /// at once). Returns when cancelled, or at once where there is nothing to follow.
    func followLifecycle() async
    /// Sessions whose VM changed on the hypervisor's side (a lifecycle event). Consumed by one reader.
    var changes: AsyncStream<SessionID> { get }
    /// The Unix socket of the VM's VNC display (QEMU listens on it while the VM has a process), or nil if
    /// this hypervisor gives VMs no display.
    func displaySocket(of id: SessionID) -> String?
    /// Why the VM of `id` has no display socket (``displaySocket(of:)`` is nil): what a page is told with
    /// `not_supported`.
    func noDisplayReason(of id: SessionID) -> String
    /// A PNG of the running (or paused) VM's screen.
    func screenshot(of id: SessionID) async throws(VMSessionError) -> [UInt8]
    /// Where the VM's serial console is, or nil if this hypervisor gives VMs no console.
    func console(of id: SessionID) -> ConsoleEndpoints?
    /// Where the daemon reaches the guest's port 80 while the VM runs with a network (a VM defined with an
    /// ``MachineSpec/egress`` policy), or nil if it has none.
    func guestAPIAddress(of id: SessionID) -> GuestAPIAddress?
    /// What each session's VM uses of CPU, memory, disk and network (for the metrics), read in one call; a VM
    /// the hypervisor reports nothing for is left out. If the call is cancelled, it returns at once (throwing
    /// `CancellationError`) and leaves the hypervisor's call to finish on its own.
    func machineStats() async throws -> [SessionID: MachineStats]

    /// Takes snapshot `name` of the running or paused VM, memory and disk, leaving it as it was; returns the
    /// bytes it took on the host.
    func createSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) -> Int64
    /// Brings the VM back to snapshot `name`, running or (`paused`) paused.
    func revertToSnapshot(_ name: String, of id: SessionID, paused: Bool) async throws(VMSessionError)
    /// Deletes snapshot `name`; succeeds if it is not there.
    func deleteSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError)
    /// The names of the VM's snapshots (none if the VM is not defined).
    func snapshotNames(of id: SessionID) async throws(VMSessionError) -> [String]

    /// Whether the VM of `id` has a seed drive (it was started with user-data).
    func hasSeed(_ id: SessionID) -> Bool
    /// Puts `seed` in the seed drive of the defined, stopped VM of `id`, which then boots with it: how a
    /// session from a template that ran before gets the user-data of its next start (it is not redefined).
    func replaceSeed(_ seed: ContextSeed, for id: SessionID) async throws(VMSessionError)
    /// Saves the running VM of `id` as template `name` (its memory image, a read-only copy of its disk) and
    /// brings it back running where it was; returns the bytes the template takes on the host.
    func captureTemplate(_ name: String, of id: SessionID) async throws(VMSessionError) -> Int64
    /// Defines the VM of `spec.id` from template `name` (made from session `source`): a fresh copy-on-write
    /// overlay on the template's disk, and the template's machine under the session's own identity, network,
    /// console and display. It stays off until ``restoreTemplate(_:for:source:)``.
    func defineFromTemplate(_ name: String, for spec: MachineSpec, source: SessionID) async throws(VMSessionError)
    /// Starts the VM of `spec.id` from template `name`'s memory, running, with `spec.seed` where the
    /// template's seed was (the guest finds it there after the restore).
    func restoreTemplate(_ name: String, for spec: MachineSpec, source: SessionID) async throws(VMSessionError)
    /// Deletes template `name`'s files; succeeds if they are not there.
    func removeTemplate(_ name: String) async throws(VMSessionError)
    /// The names of the templates whose files are complete.
    func templateNames() async -> [String]
}

extension Hypervisor {
    public func repairInterrupted() async throws(VMSessionError) -> [String] { [] }
    public func reaches(_ id: SessionID) -> Bool { true }
    public func guestNetworkOffer(for id: SessionID) -> GuestNetworkOffer { guestNetworkOffer }
    public var guestNetworkOffer: GuestNetworkOffer { .available }
    public func reconnected() async {}
    public func followLifecycle() async {}
    public func displaySocket(of id: SessionID) -> String? { nil }
    public func noDisplayReason(of id: SessionID) -> String { "This hypervisor gives VMs no display." }
    public func screenshot(of id: SessionID) async throws(VMSessionError) -> [UInt8] {
        throw VMSessionError(.notSupported, "This hypervisor gives VMs no display.")
    }
    public func console(of id: SessionID) -> ConsoleEndpoints? { nil }
    public func guestAPIAddress(of id: SessionID) -> GuestAPIAddress? { nil }
    public func machineStats() async throws -> [SessionID: MachineStats] { [:] }
    public func createSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) -> Int64 {
        throw VMSessionError(.notSupported, "This hypervisor takes no snapshots.")
    }
    public func revertToSnapshot(_ name: String, of id: SessionID, paused: Bool) async throws(VMSessionError) {
        throw VMSessionError(.notSupported, "This hypervisor takes no snapshots.")
    }
    public func deleteSnapshot(_ name: String, of id: SessionID) async throws(VMSessionError) {
        throw VMSessionError(.notSupported, "This hypervisor takes no snapshots.")
    }
    public func snapshotNames(of id: SessionID) async throws(VMSessionError) -> [String] { [] }
    public func hasSeed(_ id: SessionID) -> Bool { false }
    public func replaceSeed(_ seed: ContextSeed, for id: SessionID) async throws(VMSessionError) {}
    public func captureTemplate(_ name: String, of id: SessionID) async throws(VMSessionError) -> Int64 {
        throw VMSessionError(.notSupported, "This hypervisor makes no templates.")
    }
    public func defineFromTemplate(_ name: String, for spec: MachineSpec, source: SessionID) async throws(VMSessionError) {
        throw VMSessionError(.notSupported, "This hypervisor makes no templates.")
    }
    public func restoreTemplate(_ name: String, for spec: MachineSpec, source: SessionID) async throws(VMSessionError) {
        throw VMSessionError(.notSupported, "This hypervisor makes no templates.")
    }
    public func removeTemplate(_ name: String) async throws(VMSessionError) {}
    public func templateNames() async -> [String] { [] }
}

/// Where the daemon reaches a guest's API: a Unix socket only the daemon's user can open (a real guest,
/// see ``GuestNetwork``), or a port on the loopback (a stand-in guest that tests run beside a driver with
/// no QEMU, such as `test:///default`).
public enum GuestAPIAddress: Sendable, Hashable {
    case unixSocket(String)
    case loopbackPort(Int)

    /// The URL of `pathAndQuery` (which starts with `/`) on the guest, as AsyncHTTPClient takes it.
    public func url(_ pathAndQuery: String) -> String {
        switch self {
        case .unixSocket(let path):
            let socket = path.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(.init(charactersIn: "-._~"))) ?? path
            return "http+unix://\(socket)\(pathAndQuery)"
        case .loopbackPort(let port):
            return "http://127.0.0.1:\(port)\(pathAndQuery)"
        }
    }
}

/// A VM's serial console as QEMU gives it to the daemon: a log of every byte the guest wrote (kept across
/// starts, restores and daemon restarts, so it is the console's history), and a Unix socket that takes the
/// guest's input while the VM has a process (QEMU serves one client on it: the daemon).
public struct ConsoleEndpoints: Equatable, Sendable {
    public let log: String
    public let socket: String

    public init(log: String, socket: String) {
        self.log = log
        self.socket = socket
    }
}

/// Which hypervisor and how it runs guests.
public struct HypervisorDescription: Codable, Equatable, Sendable {
    public var uri: String
    public var driver: String
    public var accelerator: String
    public var supportsExecutionCap: Bool
    /// The hypervisor's version as libvirt reports it (e.g. `7.2.0` for QEMU 7.2); the plugin's `hypervisorVersion`.
    public var version: String?

    public init(uri: String, driver: String, accelerator: String, supportsExecutionCap: Bool, version: String? = nil) {
        self.version = version
        self.uri = uri
        self.driver = driver
        self.accelerator = accelerator
        self.supportsExecutionCap = supportsExecutionCap
    }
}
