import Foundation
import Logging
import Testing
import VMSessionContext
import VMSessionCore
@testable import VMSessionHypervisor
@testable import Libvirt
import CLibvirt
import VMSessionTestSupport

/// The hypervisor against libvirt's test driver: a real libvirt driver, in-process, with no guests booted.
@Suite("LibvirtHypervisor on test:///default")
struct LibvirtHypervisorTests {
    /// A state directory and an image for one test, removed at the end.
    final class Fixture {
        let scratch: TemporaryDirectory
        var directory: String { scratch.path }
        let hypervisor: LibvirtHypervisor
        let image: MachineImage

        init() throws {
            scratch = try TemporaryDirectory("vms-hv")
            let directory = scratch.path
            try TemporaryDirectory.makeStandInAppliance(in: directory)
            image = .kernel(kernelPath: "\(directory)/vmlinuz", initrdPath: "\(directory)/initrd.img", commandLine: "console=ttyS0")
            hypervisor = try LibvirtHypervisor(
                configuration: .init(uri: "test:///default", stateDirectory: directory, accelerator: .tcg),
                logger: Logger(label: "test"))
        }

        func spec(_ id: SessionID, name: String = "demo", seed: ContextSeed? = nil) -> MachineSpec {
            MachineSpec(id: id, sessionName: name, requirements: .init(cpus: 1, memory: 128, disk: 64, version: "appliance"), image: image, seed: seed)
        }
    }

    @Test("a VM goes through define, start, pause, resume, hibernate, restore and remove")
    func fullLifecycle() async throws {
        let fixture = try Fixture()
        let hypervisor = fixture.hypervisor
        let id = SessionID()
        #expect(try await hypervisor.status(of: id) == .absent)
        try await hypervisor.define(fixture.spec(id))
        #expect(FileManager.default.fileExists(atPath: hypervisor.machineDirectory(for: id) + "/disk.qcow2"))
        #expect(try await hypervisor.status(of: id) == .shutOff(reason: .neverStarted, hasSavedState: false))
        try await hypervisor.start(id)
        #expect(try await hypervisor.status(of: id) == .running)
        try await hypervisor.pause(id)
        #expect(try await hypervisor.status(of: id) == .paused(reason: "by request"))
        try await hypervisor.resume(id)
        try await hypervisor.hibernate(id)
        #expect(try await hypervisor.status(of: id) == .shutOff(reason: .saved, hasSavedState: true))
        #expect(try await hypervisor.allMachines()[id] == .shutOff(reason: .saved, hasSavedState: true))
        try await hypervisor.start(id)
        #expect(try await hypervisor.status(of: id) == .running)
        try await hypervisor.remove(id)
        #expect(try await hypervisor.status(of: id) == .absent)
        #expect(!FileManager.default.fileExists(atPath: hypervisor.machineDirectory(for: id)))
    }

    @Test("a disk image's overlay is never smaller than the image (a 64 MiB disk on a 100 MiB image gets 100 MiB), and grows to a larger disk")
    func overlayAtLeastTheImage() async throws {
        let fixture = try Fixture()
        let base = fixture.directory + "/base.qcow2"
        try await ExternalCommand.run("qemu-img", ["create", "-q", "-f", "qcow2", base, "100M"])
        for (disk, expected) in [(64, 100 << 20), (200, 200 << 20)] {
            let id = SessionID()
            let spec = MachineSpec(
                id: id, sessionName: "image", requirements: .init(cpus: 1, memory: 128, disk: disk, version: "image"),
                image: .disk(path: base, format: "qcow2"))
            try await fixture.hypervisor.define(spec)
            let overlay = fixture.hypervisor.machineDirectory(for: id) + "/disk.qcow2"
            #expect(try await DiskImageInspector.virtualSize(overlay) == Int64(expected), "disk \(disk) MiB")
            try await fixture.hypervisor.remove(id)
        }
    }

    @Test("stop leaves the VM powered off")
    func stopPowersOff() async throws {
        let fixture = try Fixture()
        let id = SessionID()
        try await fixture.hypervisor.define(fixture.spec(id))
        try await fixture.hypervisor.start(id)
        try await fixture.hypervisor.stop(id, grace: .milliseconds(300))
        if case .shutOff(_, hasSavedState: false) = try await fixture.hypervisor.status(of: id) {} else {
            Issue.record("the VM still runs after stop")
        }
        try await fixture.hypervisor.remove(id)
    }

    @Test("lifecycle events for our VMs arrive on the changes stream")
    func lifecycleEventsArrive() async throws {
        let fixture = try Fixture()
        let id = SessionID()
        try await fixture.hypervisor.define(fixture.spec(id))
        var iterator = fixture.hypervisor.changes.makeAsyncIterator()
        try await fixture.hypervisor.start(id)
        // Other tests' VMs may share the in-process test driver: wait for ours.
        var seen = false
        for _ in 0..<100 {
            guard let changed = await iterator.next() else { break }
            if changed == id { seen = true; break }
        }
        #expect(seen)
        try await fixture.hypervisor.remove(id)
    }

    @Test("a seed is written as an ISO and attached read-only")
    func seedAttached() async throws {
        let fixture = try Fixture()
        let id = SessionID()
        let seed = try ContextSeed.noCloud(userData: "#!/bin/sh\necho hi\n", instanceID: id.description, hostname: "h")
        try await fixture.hypervisor.define(fixture.spec(id, seed: seed))
        let iso = fixture.hypervisor.machineDirectory(for: id) + "/seed.iso"
        let attributes = try FileManager.default.attributesOfItem(atPath: iso)
        #expect((attributes[.size] as? Int ?? 0) > 0)
        try await fixture.hypervisor.remove(id)
    }

    @Test("a driver that runs no QEMU says its host gives guests no network, and why, but defines its sessions with one, for a stand-in guest at the sandbox's socket")
    func guestNetworkWithoutQEMU() throws {
        let fixture = try Fixture()
        let host = fixture.hypervisor.guestNetworkOffer
        #expect(!host.available && (host.reason ?? "").contains("runs no QEMU"), "\(host)")
        #expect(fixture.hypervisor.guestNetworkOffer(for: SessionID()) == .available)
        let standIn = try LibvirtHypervisor(
            configuration: .init(uri: "test:///default", stateDirectory: fixture.directory, accelerator: .tcg, standInGuestAPIPort: { _ in 8080 }),
            logger: Logger(label: "test"))
        #expect(standIn.guestNetworkOffer == .available && standIn.guestNetworkOffer(for: SessionID()) == .available)
    }

    @Test("the execution cap is refused by a driver that cannot enforce it")
    func capUnsupportedOnTestDriver() async throws {
        let fixture = try Fixture()
        #expect(fixture.hypervisor.description.supportsExecutionCap == false)
        do {
            try await fixture.hypervisor.setExecutionCap(try ExecutionCap(percent: 25), for: SessionID())
            Issue.record("the test driver accepted a cap")
        } catch {
            #expect(error.code == .notSupported)
        }
    }

    @Test("domain XML escapes what it carries and refuses names it cannot hold")
    func domainXMLEscapes() throws {
        let fixture = try Fixture()
        let id = SessionID()
        var xml = DomainXML(spec: fixture.spec(id, name: "a.b"), accelerator: .tcg, diskPath: "/d/disk.qcow2", seedPath: nil, consolePath: "/d/c.log")
        let rendered = try xml.render()
        #expect(rendered.contains("<name>vms-\(id)</name>"))
        #expect(rendered.contains("<domain type='qemu'"))
        #expect(!rendered.contains("vdb"))
        #expect(DomainXML.escape("<a href='x'>&\"</a>") == "&lt;a href=&apos;x&apos;&gt;&amp;&quot;&lt;/a&gt;")
        xml.spec.sessionName = "x'/><evil"
        #expect(throws: VMSessionError.self) { _ = try xml.render() }
        xml.spec.sessionName = "ok"
        xml.diskPath = "relative/disk"
        #expect(throws: VMSessionError.self) { _ = try xml.render() }
        xml.diskPath = "/d/disk.qcow2"
        xml.spec.cpus = 99
        #expect(throws: VMSessionError.self) { _ = try xml.render() }
    }

    @Test("a VM with a seed gets a seed-signal serial port (ttyS1) after its console's; one without a seed has none")
    func seedSignalPort() throws {
        let fixture = try Fixture()
        let id = SessionID()
        var xml = DomainXML(
            spec: fixture.spec(id), accelerator: .tcg, diskPath: "/d/disk.qcow2", seedPath: "/d/seed.iso", consolePath: "/d/c.log",
            consoleSocketPath: "/d/console.sock", seedSignalSocketPath: "/d/seed.sock")
        let rendered = try xml.render()
        let console = try #require(rendered.range(of: "<source mode='bind' path='/d/console.sock'/>"))
        let signal = try #require(rendered.range(of: "<source mode='bind' path='/d/seed.sock'/>"))
        #expect(console.upperBound < signal.lowerBound, "libvirt takes the first serial port as the console")
        let signalEnd = try #require(rendered[signal.upperBound...].range(of: "</serial>"))
        #expect(rendered[signal.upperBound..<signalEnd.lowerBound].contains("<target type='isa-serial' port='1'/>"))
        xml.seedPath = nil
        #expect(!(try xml.render()).contains("seed.sock"))
        xml.seedPath = "/d/seed.iso"
        xml.seedSignalSocketPath = "/d/" + String(repeating: "s", count: 120)
        #expect(throws: VMSessionError.self) { _ = try xml.render() }
    }

    @Test("a seed's volume descriptor holds its instance-id: two seeds of the same size for two instances, made in the same second, differ there")
    func seedDescriptorNamesItsInstance() async throws {
        let fixture = try Fixture()
        var descriptors: [SessionID: [UInt8]] = [:]
        for id in [SessionID(), SessionID()] {
            try FileManager.default.createDirectory(atPath: fixture.hypervisor.machineDirectory(for: id), withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: fixture.hypervisor.machineDirectory(for: id)) }
            let seed = try ContextSeed.noCloud(userData: "#!/bin/sh\necho same\n", instanceID: id.description, hostname: "vm")
            try await fixture.hypervisor.replaceSeed(seed, for: id)
            // What a guest's seed watch reads: the primary volume descriptor, 2 KiB at 32 KiB.
            let handle = try #require(FileHandle(forReadingAtPath: fixture.hypervisor.seedPath(for: id)))
            defer { try? handle.close() }
            try handle.seek(toOffset: 16 * 2048)
            let descriptor = [UInt8](try #require(try handle.read(upToCount: 2048)))
            #expect(String(decoding: descriptor, as: UTF8.self).contains(id.description), "the instance-id in the descriptor")
            descriptors[id] = descriptor
        }
        #expect(Set(descriptors.values).count == 2)
    }

    @Test("the seed signal reaches a port that reads only after a while and drops what it has not read on a hang-up, as QEMU's chardev does; it says so when nothing listens")
    func seedSignalWritesALine() async throws {
        let fixture = try Fixture()
        let id = SessionID()
        #expect(await fixture.hypervisor.signalSeed(id) == false)
        try FileManager.default.createDirectory(atPath: fixture.hypervisor.machineDirectory(for: id), withIntermediateDirectories: true)
        let path = try fixture.hypervisor.prepareSocket(fixture.hypervisor.seedSignalSocketPath(for: id))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let listener = try Self.listeningSocket(at: path)
        defer { close(listener) }
        let hypervisor = fixture.hypervisor
        // QEMU's side of the port (chardev/char-socket.c): it accepts, reads only once the guest's UART has room
        // (here: 100 ms later), and drops the connection, unread bytes and all, as soon as it sees a hang-up.
        async let signalled = hypervisor.signalSeed(id)
        let received = await Self.likeQEMU(listener, readingAfter: 100_000)
        #expect(received.map { String(decoding: $0, as: UTF8.self) } == "seed\n", "the line QEMU read before it saw the connection end")
        #expect(await signalled, "QEMU read the line and the end of file after it")
        // A port that never reads: the signal gives up after its timeout and says the line was not taken.
        async let unread = hypervisor.signalSeed(id)
        let peer = accept(listener, nil, nil)
        #expect(await unread == false)
        close(peer)
    }

    /// Accepts one connection on `listener` and, `delay` microseconds later, reads it to its end as QEMU's
    /// chardev would: nothing if the client had hung up by then (QEMU drops the connection on G_IO_HUP).
    static func likeQEMU(_ listener: Int32, readingAfter delay: UInt32) async -> [UInt8]? {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                let peer = accept(listener, nil, nil)
                guard peer >= 0 else { return continuation.resume(returning: nil) }
                defer { close(peer) }
                usleep(delay)
                var descriptor = pollfd(fd: peer, events: Int16(POLLIN), revents: 0)
                guard poll(&descriptor, 1, 2000) > 0, descriptor.revents & Int16(POLLHUP) == 0 else {
                    return continuation.resume(returning: [])
                }
                var buffer = [UInt8](repeating: 0, count: 64)
                var bytes: [UInt8] = []
                while true {
                    let count = buffer.withUnsafeMutableBytes { read(peer, $0.baseAddress, $0.count) }
                    if count <= 0 { break }
                    bytes += buffer[0..<count]
                }
                continuation.resume(returning: bytes)
            }
        }
    }

    /// A listening Unix socket at `path`, as QEMU's `server=on` chardev is.
    static func listeningSocket(at path: String) throws -> Int32 {
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(listener >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0 && listen(listener, 1) == 0)
        return listener
    }
}

/// What a daemon killed in the middle of an action leaves to libvirt, and what the hypervisor makes of it.
@Suite("Interrupted runs and VM states libvirt reports")
struct InterruptedRunTests {
    @Test("stopping a paused VM wakes it and powers it off through ACPI instead of waiting out the grace")
    func stopPausedUsesACPI() async throws {
        let fixture = try LibvirtHypervisorTests.Fixture()
        let id = SessionID()
        try await fixture.hypervisor.define(fixture.spec(id))
        try await fixture.hypervisor.start(id)
        try await fixture.hypervisor.pause(id)
        try await fixture.hypervisor.stop(id, grace: .seconds(3))
        // Before: the paused guest never saw the request, the grace ran out and the VM was destroyed.
        #expect(try await fixture.hypervisor.status(of: id) == .shutOff(reason: .guestShutdown, hasSavedState: false))
        try await fixture.hypervisor.remove(id)
    }

    @Test("libvirt's shutting-down and guest-suspended states are not reported as paused")
    func domainStates() {
        #expect(DomainState(state: Int32(VIR_DOMAIN_SHUTDOWN.rawValue), reason: 0) == .shuttingDown)
        #expect(DomainState(state: Int32(VIR_DOMAIN_PMSUSPENDED.rawValue), reason: 0) == .suspendedByGuest)
        #expect(DomainState(state: Int32(VIR_DOMAIN_NOSTATE.rawValue), reason: 0) == .noState)
    }

    /// Waits until a stand-in QEMU has exec'd: before that its command line is still the test's own (a
    /// loaded machine takes a while; CI once ran the repair first and found no QEMU to kill).
    static func untilExecuted(_ process: Process, as domain: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while !EmbeddedRootRepair.isQEMU(process.processIdentifier, of: domain), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Whether a stand-in QEMU ended within 30 s, waited for without holding a cooperative thread
    /// (`waitUntilExit` held one for the stand-in's whole 60 s when a repair missed it, and the tests around
    /// it starved). One still running is then killed, and the answer is false.
    static func exited(_ process: Process) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(30)
        while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        guard process.isRunning else { return true }
        kill(process.processIdentifier, SIGKILL)
        while process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        return false
    }

    /// A fake embedded root with one status file.
    static func root(status pid: Int32, domain: String) throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("vms-root-\(UUID())").path
        try FileManager.default.createDirectory(atPath: root + "/run/qemu", withIntermediateDirectories: true)
        let xml = """
            <domstatus state='paused' reason='starting up' pid='\(pid)'>
              <job type='none' async='start' phase='none' asyncStarted='0'/>
              <domain type='qemu'><name>\(domain)</name></domain>
            </domstatus>
            """
        try xml.write(toFile: "\(root)/run/qemu/\(domain).xml", atomically: true, encoding: .utf8)
        return root
    }

    @Test("a status file of a start that never launched QEMU (pid 0) is removed, and the QEMU its pid file names is killed")
    func unfinishedStartRepaired() async throws {
        let domain = "vms-\(UUID().uuidString.lowercased())"
        let root = try Self.root(status: 0, domain: domain)
        defer { try? FileManager.default.removeItem(atPath: root) }
        // Stands in for a QEMU launched before its pid reached the status file: its arguments name the guest.
        let qemu = Process()
        qemu.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        qemu.arguments = ["-c", "import time; time.sleep(60)", "guest=\(domain),debug-threads=on"]
        try qemu.run()
        defer { if qemu.isRunning { qemu.terminate() } }
        try "\(qemu.processIdentifier)\n".write(toFile: "\(root)/run/qemu/\(domain).pid", atomically: true, encoding: .utf8)
        try await Self.untilExecuted(qemu, as: domain)

        let repairs = EmbeddedRootRepair.repair(root: root)
        #expect(repairs.count == 2, "\(repairs)")
        #expect(!FileManager.default.fileExists(atPath: "\(root)/run/qemu/\(domain).xml"))
        #expect(!FileManager.default.fileExists(atPath: "\(root)/run/qemu/\(domain).pid"))
        #expect(try await Self.exited(qemu), "the repair killed the stand-in")
        #expect(qemu.terminationReason == .uncaughtSignal)
    }

    @Test("a status file whose pid is gone is removed; one whose QEMU lives is left to libvirt")
    func deadPIDRepairedLiveKept() async throws {
        let domain = "vms-\(UUID().uuidString.lowercased())"
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let root = try Self.root(status: dead.processIdentifier, domain: domain)
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect(EmbeddedRootRepair.repair(root: root).count == 1)
        #expect(!FileManager.default.fileExists(atPath: "\(root)/run/qemu/\(domain).xml"))

        let qemu = Process()
        qemu.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        qemu.arguments = ["-c", "import time; time.sleep(60)", "guest=\(domain),debug-threads=on"]
        try qemu.run()
        defer { qemu.terminate() }
        try await Self.untilExecuted(qemu, as: domain)
        let live = try Self.root(status: qemu.processIdentifier, domain: domain)
        defer { try? FileManager.default.removeItem(atPath: live) }
        #expect(EmbeddedRootRepair.repair(root: live).isEmpty)
        #expect(FileManager.default.fileExists(atPath: "\(live)/run/qemu/\(domain).xml"))
        #expect(qemu.isRunning)
    }
}

extension InterruptedRunTests {
    /// A process named like QEMU (argv[0]) with a QMP socket argument, standing in for libvirt's probe.
    static func fakeQEMU(qmp: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", "exec -a qemu-system-x86_64 /usr/bin/python3 -c 'import time; time.sleep(60)' -qmp \(qmp)"]
        try process.run()
        return process
    }

    @Test("a capability-probe QEMU of an earlier run (its QMP socket under the root) is killed; another root's is not")
    func probeKilled() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("vms-root-\(UUID())").path
        let ours = try Self.fakeQEMU(qmp: "unix:\(root)/lib/qemu/qmp-ABC/qmp.monitor,server=on,wait=off")
        let theirs = try Self.fakeQEMU(qmp: "unix:/elsewhere-\(UUID())/lib/qemu/qmp-ABC/qmp.monitor,server=on,wait=off")
        defer { theirs.terminate() }
        // Until bash has exec'd python3 under the new name.
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let name = (try? String(contentsOfFile: "/proc/\(ours.processIdentifier)/cmdline", encoding: .utf8)) ?? ""
            if name.hasPrefix("qemu-system") { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(EmbeddedRootRepair.killProbes(root: root).count == 1)
        #expect(try await Self.exited(ours), "the probe was killed")
        #expect(ours.terminationReason == .uncaughtSignal)
        #expect(theirs.isRunning)
    }
}

/// The embedded QEMU driver (no guest boots: QEMU refuses to start).
@Suite("LibvirtHypervisor on the embedded QEMU driver")
struct EmbeddedDriverTests {
    static let appliance = ProcessInfo.processInfo.environment["VMSESSIOND_TEST_APPLIANCE"]
        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
            + "/.cache/appliance"

    /// A stream socket connected to the Unix socket at `path`; the caller closes it.
    static func connect(unixSocket path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() where index < raw.count - 1 { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        if !connected { close(fd) }
        try #require(connected, "connect to \(path): errno \(errno)")
        return fd
    }

    /// Sends a plain HTTP/1.0 GET over the Unix socket at `path` and returns the whole answer.
    static func get(unixSocket path: String) throws -> String {
        let fd = try connect(unixSocket: path)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET / HTTP/1.0\r\nHost: guest\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            answer += buffer[0..<count]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    @Test(
        "a QEMU guest's port 80 answers on the daemon's Unix socket only, and its network goes with the VM",
        .enabled(if: FileManager.default.fileExists(atPath: appliance + "/vmlinuz")))
    func guestNetworkLivesWithTheVM() async throws {
        let scratch = try TemporaryDirectory("vms-n")
        let directory = scratch.path
        let hypervisor = try LibvirtHypervisor(
            configuration: .init(stateDirectory: directory, accelerator: .tcg), logger: Logger(label: "test"))
        let id = SessionID()
        let commandLine = (try? String(contentsOfFile: Self.appliance + "/cmdline", encoding: .utf8)) ?? "console=ttyS0"
        try await hypervisor.define(
            MachineSpec(
                id: id, sessionName: "net", requirements: .init(cpus: 1, memory: 128, disk: 64, version: "appliance"),
                image: .kernel(kernelPath: Self.appliance + "/vmlinuz", initrdPath: Self.appliance + "/initrd.img", commandLine: commandLine),
                egress: .internet))
        try await hypervisor.start(id)
        let network = try #require(hypervisor.network)
        #expect(network.isUp(id), "passt, pasta and the relay run while the VM does")
        guard case .unixSocket(let socket)? = hypervisor.guestAPIAddress(of: id) else {
            Issue.record("a QEMU guest is reached on a Unix socket")
            return
        }
        // The appliance starts busybox httpd a few seconds into its boot.
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(90)
        var answer = ""
        while clock.now < deadline {
            answer = (try? Self.get(unixSocket: socket)) ?? ""
            if answer.hasPrefix("HTTP/1") { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(answer.hasPrefix("HTTP/1.") && answer.contains("vmsession appliance"), "\(answer.prefix(200))")
        var info = stat()
        #expect(lstat(socket, &info) == 0 && info.st_mode & 0o077 == 0, "the socket is the daemon's user's alone")

        try await hypervisor.stop(id, grace: .seconds(1))
        #expect(!network.isUp(id), "a stopped VM has no network helpers")
        #expect(!FileManager.default.fileExists(atPath: socket))
        try await hypervisor.start(id)
        #expect(network.isUp(id), "a new start brings it back")
        try await hypervisor.remove(id)
        #expect(!network.isUp(id))
        #expect(!FileManager.default.fileExists(atPath: network.directory(id)), "nothing is left")
    }
}
