import Foundation
import Libvirt
import Testing
import VMSessionClient
import VMSessionTestSupport

/// The ground under many hosts (issue 22): libvirt hosts reached over real SSH (``SSHLibvirtHost``), driven
/// through the project's own `Libvirt` module beside a local driver, in one process (libvirt's test driver: the embedded QEMU driver allows one root per process, and
/// the hypervisor tests, run in parallel in this process, open theirs).
extension RealGuestSuites {
@Suite("Libvirt hosts reached over SSH", .serialized)
struct RemoteHostTests {
    static let readyMarker = "VMSESSION-APPLIANCE: ready"

    /// The appliance as a plain kernel boot with no disk and no network, its serial console to a file.
    static func applianceXML(name: String, appliance: String, console: String) throws -> String {
        let commandLine = (try? String(contentsOfFile: appliance + "/cmdline", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "console=ttyS0"
        return """
            <domain type='qemu'>
              <name>\(name)</name>
              <memory unit='MiB'>256</memory>
              <vcpu>1</vcpu>
              <os>
                <type arch='x86_64'>hvm</type>
                <kernel>\(appliance)/vmlinuz</kernel>
                <initrd>\(appliance)/initrd.img</initrd>
                <cmdline>\(commandLine)</cmdline>
              </os>
              <on_poweroff>destroy</on_poweroff>
              <on_crash>destroy</on_crash>
              <devices>
                <serial type='file'><source path='\(console)'/><target port='0'/></serial>
                <memballoon model='none'/>
              </devices>
            </domain>
            """
    }

    /// Opens a libvirt connection off Swift's cooperative threads (the SSH handshake blocks).
    static func connect(_ uri: String) async throws -> Connection {
        try await Command.onThread { try Connection(uri: uri) }
    }

    /// What the session-level remote tests start from: one SSH host with the `vmsessiond` pool (`admin` is its
    /// libvirt as the host's admin sees it), and the real daemon (local: the test driver) with that host added as
    /// `lab` and connected. The caller tears down `host` and stops or kills `daemon`; on a failure here both go.
    struct Lab {
        let host: SSHLibvirtHost
        let admin: Connection
        let directory: TemporaryDirectory
        let daemon: DaemonProcess
        let control: VMSessionClient
        var state: String { directory.path + "/state" }
    }

    static func startLab(_ tag: String) async throws -> Lab {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "make appliance first: \(appliance)")
        let host = try await startHosts(1)[0]
        var daemon: DaemonProcess?
        do {
            let admin = try await connect(host.uri)
            try definePool(on: admin, at: host.home + "/pool")
            let directory = try TemporaryDirectory("vms-e2e-remote-\(tag)")
            let started = DaemonProcess(
                stateDirectory: directory.path + "/state",
                arguments: ["--libvirt-uri", "test:///default", "--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "5"])
            daemon = started
            try await started.start()
            let control = VMSessionClient(baseURL: "http://127.0.0.1:\(started.port)", token: try started.adminToken())
            _ = try await control.addHost(HostRequest(name: "lab", uri: host.uri))
            let (connected, after) = try await waitForHost("lab", control, within: .seconds(30)) { $0.state == "connected" }
            #expect(connected.state == "connected", "\(connected)")
            print("lab connected after \(after)")
            return Lab(host: host, admin: admin, directory: directory, daemon: started, control: control)
        } catch {
            daemon?.kill9()
            host.tearDown()
            throw error
        }
    }

    /// The VMs and `vmsessiond` pool volumes on the host at `uri`, once none is left or after 30 s: what a
    /// reconnected daemon has not (yet) removed there.
    static func leftOnHost(_ uri: String) async throws -> [String] {
        let connection = try await connect(uri)
        let clock = ContinuousClock()
        let started = clock.now
        var left: [String] = []
        repeat {
            left = try connection.allDomains().map(\.name) + (try connection.storagePool(named: "vmsessiond")?.allVolumes().map { try $0.path() } ?? [])
            if left.isEmpty { break }
            try await Task.sleep(for: .milliseconds(250))
        } while started.duration(to: clock.now) < .seconds(30)
        return left
    }

    /// Starts `count` SSH hosts, one after the other, and says how long each took.
    static func startHosts(_ count: Int) async throws -> [SSHLibvirtHost] {
        var hosts: [SSHLibvirtHost] = []
        for _ in 0..<count {
            let host = try await Command.onThread { try SSHLibvirtHost.start() }
            print("SSH host \(host.user) on 127.0.0.1:\(host.port) made in \(host.startDuration)")
            hosts.append(host)
        }
        return hosts
    }

    /// Waits until the file shows `marker` (root reads the host user's file).
    static func waitForFile(_ path: String, containing marker: String, timeout: Duration = .seconds(120)) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if let data = FileManager.default.contents(atPath: path), String(decoding: data, as: UTF8.self).contains(marker) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        let seen = FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? "(no file)"
        throw DaemonError("\(path) never showed '\(marker)'; it has: \(seen.suffix(2000))")
    }

    @Test("two SSH hosts and a local driver in one process: a real appliance guest defined on one host runs there as that host's user, no other host sees it, and nothing is left on any host")
    func guestOnRemoteHost() async throws {
        let hosts = try await Self.startHosts(2)
        let users = hosts.map { (user: $0.user, uid: $0.uid, directory: $0.directory) }
        defer { for host in hosts { host.tearDown() } }
        let clock = ContinuousClock()

        do {
            let local = try await Self.connect("test:///default")
            let localDomains = try local.allDomains().count
            var remote: [Connection] = []
            for host in hosts {
                let started = clock.now
                remote.append(try await Self.connect(host.uri))
                print("first connection to \(host.user) (autostarts its libvirtd): \(started.duration(to: clock.now))")
            }
            // Each host's own session libvirtd, run as its user, drives QEMU.
            for connection in remote { #expect(try connection.driverName() == "QEMU") }
            // Keepalive is the remote driver's: a local driver has no far end that could hang.
            #expect(try local.setKeepAlive(interval: 1, count: 3) == false)
            for connection in remote { #expect(try connection.setKeepAlive(interval: 1, count: 3)) }
            for host in hosts {
                let daemon = try #require(host.libvirtdPID, "\(host.user) runs a session libvirtd")
                #expect(ProcessEntry.entry(daemon)?.uid == host.uid)
            }
            #expect(Set(hosts.compactMap(\.libvirtdPID)).count == 2)

            let appliance = try hosts[0].place(
                [DaemonProcess.applianceDirectory + "/vmlinuz", DaemonProcess.applianceDirectory + "/initrd.img",
                 DaemonProcess.applianceDirectory + "/cmdline"],
                in: "appliance")
            let name = "vmsh-guest-\(UUID().uuidString.prefix(8).lowercased())"
            let console = hosts[0].home + "/\(name).console.log"
            let xml = try Self.applianceXML(name: name, appliance: appliance, console: console)
            let first = remote[0]
            let domain = try await Command.onThread { try first.defineDomain(xml: xml) }
            #expect(try domain.state() == .shutOff(.unknown))
            // Only the host it was defined on knows it.
            #expect(try remote[0].allDomains().map(\.name) == [name])
            #expect(try remote[1].allDomains().isEmpty)
            #expect(try local.allDomains().count == localDomains)

            try await Command.onThread { try domain.start() }
            #expect(try domain.state() == .running)
            try await Self.waitForFile(console, containing: Self.readyMarker)
            // The guest's QEMU is the host user's, started by that host's libvirtd.
            let qemu = hosts[0].processes().filter { $0.command.hasPrefix("qemu-system") }
            #expect(qemu.count == 1, "\(hosts[0].processes())")
            #expect(try remote[0].domain(named: name)?.state() == .running)
            #expect(try remote[1].domain(named: name) == nil)

            try await Command.onThread { try domain.destroy() }
            #expect(try domain.state() == .shutOff(.destroyed))
            try await Command.onThread { try domain.undefine() }
            #expect(try remote[0].domain(named: name) == nil)
            #expect(try remote[0].allDomains().isEmpty)
            #expect(hosts[0].processes().filter { $0.command.hasPrefix("qemu-system") }.isEmpty)
        }

        // Teardown leaves no live process of any host's user, no user and no file.
        for host in hosts { host.tearDown() }
        for (user, uid, directory) in users {
            #expect(ProcessEntry.all().filter { $0.uid == uid && $0.state != "Z" }.isEmpty, "processes of \(user) are left")
            #expect(getpwnam(user) == nil, "\(user) still exists")
            #expect(!FileManager.default.fileExists(atPath: directory), "\(directory) is left")
        }
    }
}
}
