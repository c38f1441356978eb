import Foundation
import Libvirt
import Logging
import Synchronization
import Testing
import VMSessionContext
import VMSessionCore
import VMSessionHypervisor
import VMSessionTestSupport

/// The hypervisor of a remote host (issue 22), on a real SSH-reached libvirt host (``SSHLibvirtHost``): every
/// file the VM needs reaches the host as a storage volume, its console comes home through libvirt's stream.
extension RealGuestSuites.RemoteHostTests {
    /// The appliance as the daemon's image catalog describes it: a kernel and initrd on this machine.
    static func applianceImage() throws -> MachineImage {
        let appliance = DaemonProcess.applianceDirectory
        let commandLine = (try? String(contentsOfFile: appliance + "/cmdline", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "console=ttyS0"
        return .kernel(kernelPath: appliance + "/vmlinuz", initrdPath: appliance + "/initrd.img", commandLine: commandLine)
    }

    /// The admin's step on a session libvirt: a directory pool named `vmsessiond` in the host user's home.
    static func definePool(on connection: Connection, at path: String) throws {
        let pool = try connection.defineStoragePool(xml: """
            <pool type='dir'><name>vmsessiond</name><target><path>\(path)</path></target></pool>
            """)
        try pool.build()
        try pool.start()
    }

    static func waitFor(_ what: String, timeout: Duration = .seconds(60), _ condition: () async throws -> Bool) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw DaemonError("timed out waiting for \(what)")
    }

    /// Writes `text` into the console relay's socket (as the daemon's console layer does).
    static func type(_ text: String, into socket: String) throws {
        let fd = try UnixSocketClient.connect(to: socket, "the relay listens on \(socket)")
        defer { close(fd) }
        let data = Array(text.utf8)
        #expect(data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == data.count)
        usleep(300_000)  // the relay reads and sends before the connection closes
    }

    /// The first bytes a server sends on the Unix socket at `path` (a VNC server's protocol version).
    static func greeting(of path: String) throws -> String {
        let fd = try UnixSocketClient.connect(to: path, "something listens on \(path)")
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 12)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 12) }
        return String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)
    }

    @Test("a remote host's hypervisor runs the appliance with every file sent as a volume: boot output on the console relay, typed input, pause, resume, hibernate and restore on the host, reset, a snapshot reverted in place with the console still relayed, stop, and remove leaves no VM, no volume and no SSH session")
    func remoteHypervisorLifecycle() async throws {
        let host = try await Self.startHosts(1)[0]
        defer { host.tearDown() }
        let local = try TemporaryDirectory("vms-e2e-remote-hv")
        try await Self.runLifecycle(on: host, local: local.path)
        // Every connection is closed with the hypervisor: no SSH session is left on the host.
        try await Self.waitFor("the SSH sessions to end", timeout: .seconds(30)) { host.sessionProcesses().isEmpty }
        #expect(host.processes().filter { $0.command.hasPrefix("qemu-system") }.isEmpty)
    }

    /// The lifecycle on `host`, with every connection to it (the admin's, the monitor's, the hypervisor's)
    /// dropped on return.
    static func runLifecycle(on host: SSHLibvirtHost, local: String) async throws {
        let admin = try await Self.connect(host.uri)
        let clock = ContinuousClock()
        let connection = try await HostConnection.open(uri: host.uri, timeout: .seconds(60), clock: clock)
        let definition = HostDefinition(name: "remote-a", uri: host.uri, source: .admin)
        // A session libvirt without the admin's pool is refused, saying what to do; nothing is made on the host.
        let refused = #expect(throws: VMSessionError.self) {
            _ = try RemoteLibvirtHypervisor(host: definition, connection: connection, stateDirectory: local + "/refused", logger: Logger(label: "test"))
        }
        #expect(refused?.code == .notSupported && refused?.message.contains("pool-define-as vmsessiond") == true)
        #expect(try admin.allStoragePools().isEmpty)
        try Self.definePool(on: admin, at: host.home + "/pool")

        // Built on the connection's queue, as the daemon's host runtimes build it: its calls never overlap another.
        var hypervisor: RemoteLibvirtHypervisor? = try await connection.run { (_) throws(VMSessionError) in
            try RemoteLibvirtHypervisor(
                host: definition, connection: connection, stateDirectory: local + "/hosts/remote-a", logger: Logger(label: "test"))
        }
        let remote = try #require(hypervisor)
        #expect(remote.description.driver == "QEMU")
        #expect(!remote.description.supportsExecutionCap, "a session libvirt offers no cap")
        // The host's lifecycle events, as the router would follow them.
        let changed = SeenSessions()
        let changes = remote.changes
        let follower = Task { for await id in changes { changed.withLock { $0.append(id) } } }
        defer { follower.cancel() }

        let id = SessionID()
        let token = UUID().uuidString.prefix(8).lowercased()
        let seed = try ContextSeed.noCloud(
            userData: "#!/bin/sh\necho remote-seed-\(token)\n", instanceID: id.description, hostname: "remote")
        let spec = MachineSpec(
            id: id, sessionName: "remote-demo", requirements: .init(cpus: 1, memory: 256, disk: 64, version: "appliance"),
            image: try Self.applianceImage(), seed: seed, egress: .internet)
        try await remote.define(spec)
        #expect(try await remote.status(of: id) == .shutOff(reason: .neverStarted, hasSavedState: false))

        // Every file is a volume of the pool on the host; the domain names only those.
        let volumes = try await remote.volumeNames()
        #expect(volumes.contains("vms-\(id).disk.qcow2") && volumes.contains("vms-\(id).seed.iso"), "\(volumes)")
        #expect(volumes.filter { $0.hasPrefix("base-") && $0.hasSuffix(".kernel") }.count == 1, "\(volumes)")
        #expect(volumes.filter { $0.hasPrefix("base-") && $0.hasSuffix(".initrd") }.count == 1, "\(volumes)")
        let xml = try #require(try admin.domain(named: id.machineName)).xmlDescription()
        #expect(!xml.contains(DaemonProcess.applianceDirectory) && !xml.contains(local), "the XML names only the host's paths")
        #expect(xml.contains(host.home + "/pool/"))
        #expect(!xml.contains("qemu:commandline"), "no network card before the host's network check (reconnected())")
        #expect(remote.guestAPIAddress(of: id) == nil)
        // The kernel arrived byte for byte.
        let kernelPath = host.home + "/pool/" + (volumes.first { $0.hasSuffix(".kernel") } ?? "")
        #expect(FileManager.default.contents(atPath: kernelPath) == FileManager.default.contents(atPath: DaemonProcess.applianceDirectory + "/vmlinuz"))

        // A second session on the same image reuses the uploaded base.
        let second = SessionID()
        var secondSpec = spec
        secondSpec.id = second
        secondSpec.seed = nil
        try await remote.define(secondSpec)
        let both = try await remote.volumeNames()
        #expect(both.filter { $0.hasPrefix("base-") }.count == volumes.filter { $0.hasPrefix("base-") }.count, "\(both)")
        #expect(both.contains("vms-\(second).disk.qcow2") && !both.contains("vms-\(second).seed.iso"))

        try await remote.start(id)
        #expect(try await remote.status(of: id) == .running)
        let console = try #require(remote.console(of: id))
        let log = { String(decoding: FileManager.default.contents(atPath: console.log) ?? Data(), as: UTF8.self) }
        // The guest's output reaches the local log through the relay: it booted and ran the seed's user-data.
        try await Self.waitFor("the ready marker on the console relay", timeout: .seconds(120)) { log().contains(Self.readyMarker) }
        try await Self.waitFor("the user-data's output") { log().contains("remote-seed-\(token)") }
        #expect(log().contains("VMSESSION-APPLIANCE: booted"), "the first line of the guest's init is in the history")
        #expect(remote.isConsoleRelayed(id))
        // Input typed into the relay's socket reaches the guest's shell on its serial port.
        try Self.type("echo typed-\(token)-$((6*7))\n", into: console.socket)
        try await Self.waitFor("the typed command's output") { log().contains("typed-\(token)-42") }

        // The screen through libvirt's screenshot stream.
        let png = try await remote.screenshot(of: id)
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]))
        // The display: QEMU's VNC socket on the host, reached through an SSH forward to a local socket.
        let display = try #require(remote.displaySocket(of: id))
        #expect(try Self.greeting(of: display).hasPrefix("RFB 003."))

        changed.withLock { $0.removeAll() }
        try await remote.pause(id)
        #expect(try await remote.status(of: id) == .paused(reason: "by request"))
        try await Self.waitFor("the host's event for the pause") { changed.withLock { $0.contains(id) } }
        #expect(!changed.withLock { $0.contains(second) }, "only the paused VM's events")
        try await remote.resume(id)
        #expect(try await remote.status(of: id) == .running)
        await #expect(throws: VMSessionError.self) { try await remote.setExecutionCap(try ExecutionCap(percent: 50), for: id) }

        // Hibernation: the save stays on the host, the VM has no process, and start restores it.
        try await remote.hibernate(id)
        #expect(try await remote.status(of: id) == .shutOff(reason: .saved, hasSavedState: true))
        #expect(host.processes().filter { $0.command.hasPrefix("qemu-system") }.isEmpty)
        try await Self.waitFor("the relay to end with QEMU") { !remote.isConsoleRelayed(id) }
        try await remote.start(id)
        #expect(try await remote.status(of: id) == .running)
        #expect(remote.isConsoleRelayed(id))
        try Self.type("echo restored-\(token)\n", into: console.socket)
        try await Self.waitFor("the restored guest's shell") { log().contains("restored-\(token)") }

        // A reset reboots the guest: it boots again, on the same console.
        let readyCount = log().components(separatedBy: Self.readyMarker).count
        try await remote.reset(id)
        try await Self.waitFor("the ready marker after the reset", timeout: .seconds(120)) {
            log().components(separatedBy: Self.readyMarker).count > readyCount
        }
        // A snapshot with memory goes into the VM's disk volume on the host (its bytes counted); a revert to it runs in
        // the VM's own QEMU, so the console stays relayed; an unknown one is not_found.
        let bytes = try await remote.createSnapshot("s", of: id)
        #expect(bytes > 0, "the snapshot's memory is in the disk volume: \(bytes) bytes")
        #expect(try await remote.snapshotNames(of: id) == ["s"])
        try await remote.revertToSnapshot("s", of: id, paused: false)
        #expect(try await remote.status(of: id) == .running)
        #expect(remote.isConsoleRelayed(id))
        let refusal = await #expect(throws: VMSessionError.self) { try await remote.revertToSnapshot("nope", of: id, paused: false) }
        #expect(refusal?.code == .notFound)

        try await remote.stop(id, grace: .seconds(30))
        #expect(try await remote.status(of: id) == .shutOff(reason: .guestShutdown, hasSavedState: false))

        try await remote.remove(id)
        #expect(try await remote.status(of: id) == .absent)
        // The other session still holds the base volumes.
        let afterFirst = try await remote.volumeNames()
        #expect(afterFirst.contains { $0.hasSuffix(".kernel") } && !afterFirst.contains { $0.contains(id.description) }, "\(afterFirst)")
        #expect(!FileManager.default.fileExists(atPath: remote.machineDirectory(for: id)))
        #expect(!FileManager.default.fileExists(atPath: display), "the display's forward went with the VM")

        try await remote.remove(second)
        #expect(try await remote.volumeNames() == [], "no volume is left on the host")
        #expect(try admin.allDomains().isEmpty, "no VM is left on the host")
        #expect(try await remote.allMachines().isEmpty)
        #expect(host.processes().filter { $0.command.hasPrefix("qemu-system") }.isEmpty)

        hypervisor = nil
        // The pool is the admin's; the admin's step undone, nothing of the daemon's is on the host.
        let pool = try #require(try admin.storagePool(named: "vmsessiond"))
        try pool.destroy()
        try pool.delete()
        try pool.undefine()
        #expect(!FileManager.default.fileExists(atPath: host.home + "/pool"))
        #expect(hypervisor == nil)
    }
}

/// Sessions seen on a hypervisor's `changes`, shared with the task that follows them.
final class SeenSessions: Sendable {
    private let ids = Mutex<[SessionID]>([])
    func withLock<T: Sendable>(_ body: (inout [SessionID]) -> T) -> T { ids.withLock { body(&$0) } }
}
