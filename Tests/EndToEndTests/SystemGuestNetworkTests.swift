import Foundation
import Libvirt
import Testing
import VMSessionClient
import VMSessionTestSupport

/// The guest's network on a system libvirt reached over SSH as root (issue 22): QEMU runs as `libvirt-qemu` there,
/// not as the SSH user, so the sandbox's socket is opened to QEMU's group alone. The real daemon, root's system
/// libvirtd (``SystemSSHHost``), a real appliance guest under TCG, and the egress test's world around it.
extension RealGuestSuites.RemoteHostTests {
    /// The long-lived helpers (passt, pasta, socat; the namespace's holder becomes passt) of the sandbox in
    /// `directory`: the processes whose command line names it, QEMU (whose NIC names its socket) aside.
    static func helpers(of directory: String) -> [ProcessEntry] {
        ProcessEntry.all().filter { entry in
            guard entry.state != "Z", !entry.command.hasPrefix("qemu"),
                let data = FileManager.default.contents(atPath: "/proc/\(entry.pid)/cmdline")
            else { return false }
            return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(directory)
        }
    }

    /// A path's mode bits, owner and group.
    static func ownership(_ path: String) -> (mode: Int, uid: uid_t, gid: gid_t)? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return (Int(info.st_mode & 0o7777), info.st_uid, info.st_gid)
    }

    @Test("a guest on a system libvirt reached over SSH as root gets the sandbox: QEMU (libvirt-qemu) reaches net.sock through directories opened to its group alone, the guest's API answers through the daemon's proxy, under the default policy it reaches the internet and nothing of the host's loopback, and close leaves no helper and no file on the host")
    func guestNetworkOnASystemHost() async throws {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "make appliance first: \(appliance)")
        let qemuGroup = try #require(getgrnam("libvirt-qemu"), "libvirt-qemu exists (make deps)").pointee.gr_gid
        let world = try await RealGuestSuites.GuestEgressTests.World.make()
        defer { world.tearDown() }
        let host = try await Command.onThread { try SystemSSHHost.start() }
        defer { host.tearDown() }
        let directory = try TemporaryDirectory("vms-e2e-sysnet")
        let state = directory.path + "/state"
        let daemon = DaemonProcess(
            stateDirectory: state,
            arguments: ["--libvirt-uri", "test:///default", "--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "5"])
        try await daemon.start()
        defer { daemon.kill9() }  // after a failure; the test stops it itself
        let control = VMSessionClient(baseURL: "http://127.0.0.1:\(daemon.port)", token: try daemon.adminToken())
        _ = try await control.addHost(HostRequest(name: "sys", uri: host.uri))
        let (connected, after) = try await Self.waitForHost("sys", control, within: .seconds(120)) { $0.state == "connected" }
        #expect(connected.state == "connected", "\(connected)")
        print("system host over SSH connected after \(after)")
        _ = try await control.drainHost("local")

        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("net-system")
        let session = "/api/v1/sessions/\(id)"
        let base = "/tmp/vmsessiond-sysnet-0"
        let sandbox = base + "/\(id)"
        defer {
            // After a failure: what the daemon did not end or remove.
            for entry in Self.helpers(of: sandbox) { kill(entry.pid, SIGKILL) }
            try? FileManager.default.removeItem(atPath: sandbox)
            _ = rmdir(base)
        }
        let marker = "system-guest-api-\(UUID().uuidString.prefix(8).lowercased())"
        let probe = RealGuestSuites.GuestEgressTests.probeUserData(world.targets(daemonPort: daemon.port))
        let userData = "#!/bin/sh\necho \(marker) >/www/index.html\n" + probe.dropFirst("#!/bin/sh\n".count)
        try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#).status == 202)
            _ = try await log.state("open")
            #expect(try await api.typed(token: token).session(id).host?.name == "sys")
            let body = #"{"userData":\#(try RealGuestSuites.GuestEgressTests.jsonString(userData))}"#
            #expect(try await api.call(.POST, session + "/start", token: token, body: body).status == 202)
            _ = try await log.state("running")
            _ = try await log.next("apiAvailable", timeout: .seconds(120))
        }
        // QEMU runs as libvirt-qemu and its NIC is passt's socket in root's sandbox under /tmp, not root's 0700 home.
        let admin = try await Self.connect(host.uri)
        let xml = try #require(try admin.domain(named: "vms-\(id)")).xmlDescription()
        #expect(xml.contains("qemu:commandline") && xml.contains(sandbox + "/net.sock"), "\(xml)")
        let qemu = host.libvirt.processes().filter { $0.command.hasPrefix("qemu-system") }
        #expect(!qemu.isEmpty && qemu.allSatisfy { $0.uid == host.libvirt.uid }, "QEMU runs as libvirt-qemu: \(qemu)")
        // Opened to QEMU's group alone: directories entered (0710), never listed; net.sock 0660; the API's socket root's.
        for path in [base, sandbox] {
            let owned = Self.ownership(path)
            #expect(owned?.mode == 0o710 && owned?.uid == 0 && owned?.gid == qemuGroup, "\(path): \(String(describing: owned))")
        }
        let net = Self.ownership(sandbox + "/net.sock")
        #expect(net?.mode == 0o660 && net?.gid == qemuGroup, "net.sock: \(String(describing: net))")
        let apiSocket = Self.ownership(sandbox + "/api.sock")
        #expect(apiSocket?.mode == 0o600 && apiSocket?.uid == 0, "api.sock: \(String(describing: apiSocket))")
        #expect(!FileManager.default.fileExists(atPath: "/root/.cache/vmsessiond-net/\(id)"), "nothing in root's home")
        // Not the child socat forks per connection (a guest-API probe in flight): it lives only as long as that.
        let socats = Set(Self.helpers(of: sandbox).filter { $0.command == "socat" }.map(\.pid))
        let helpers = Self.helpers(of: sandbox).filter { !socats.contains($0.ppid) }
        print("the system host's sandbox helpers: \(helpers.map(\.command))")
        #expect(helpers.count == 3 && helpers.allSatisfy { $0.uid == 0 }, "passt, pasta and socat run as root: \(helpers)")

        let console = try #require(await Self.relayedConsole(under: state, of: id), "the daemon relays the remote console")
        try await Self.waitForFile(console, containing: "EGRESS done", timeout: .seconds(180))
        let reached = Self.egressResults(in: console)
        print("the system host's guest's egress: \(reached)")
        #expect(
            reached == ["internet": true, "private": false, "host-loopback": false, "daemon": false, "host-address": false],
            "under the default policy (internet) the guest reaches the internet and nothing of its host: \(reached)")

        // The guest's API, through the daemon's proxy, from the host's socat over SSH.
        let page = try await GuestAPITests.fetch(api.base + session + "/guest/", token: token)
        #expect(page.status == 200 && page.body.contains(marker), "\(page.status) \(page.body.prefix(300))")

        // Close: no VM, no volume, no helper and no file of the sandbox is left on the host.
        try await api.withEvents(session: id, token: token) { log in
            #expect(try await api.call(.POST, session + "/close", token: token).status == 202)
            _ = try await log.state("closed", timeout: .seconds(60))
        }
        #expect(try await Self.leftOnHost(host.uri).isEmpty)
        #expect(Self.helpers(of: sandbox).isEmpty, "no helper is left: \(Self.helpers(of: sandbox))")
        #expect(!FileManager.default.fileExists(atPath: sandbox) && !FileManager.default.fileExists(atPath: base), "the sandbox's directories are gone")
        #expect(!FileManager.default.fileExists(atPath: "/root/.cache/vmsessiond-net/\(id)"))
        try await daemon.stop()
    }

    @Test("a system libvirt reached over SSH by a user that may use libvirt but is in no group of QEMU's runs the guest with no NIC, and its guest API answers 422 not_supported saying what to do; nothing of a sandbox is made on the host")
    func systemHostWithAnSSHUserOutsideQEMUsGroup() async throws {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "make appliance first: \(appliance)")
        let host = try await Command.onThread { try SystemSSHHost.start(unprivilegedUser: true) }
        defer { host.tearDown() }
        let uid = try #require(getpwnam(host.user)).pointee.pw_uid
        let directory = try TemporaryDirectory("vms-e2e-sysnet-user")
        let daemon = DaemonProcess(
            stateDirectory: directory.path + "/state",
            arguments: ["--libvirt-uri", "test:///default", "--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "5"])
        try await daemon.start()
        defer { daemon.kill9() }  // after a failure; the test stops it itself
        let control = VMSessionClient(baseURL: "http://127.0.0.1:\(daemon.port)", token: try daemon.adminToken())
        _ = try await control.addHost(HostRequest(name: "sysuser", uri: host.uri))
        let (connected, _) = try await Self.waitForHost("sysuser", control, within: .seconds(120)) { $0.state == "connected" }
        #expect(connected.state == "connected", "the user reaches the system libvirt: \(connected)")
        _ = try await control.drainHost("local")

        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("net-system-user")
        let session = "/api/v1/sessions/\(id)"
        try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#).status == 202)
            _ = try await log.state("open")
            #expect(try await api.call(.POST, session + "/start", token: token).status == 202)
            _ = try await log.state("running")
        }
        let guest = try await api.call(.GET, session + "/guest/", token: token)
        let message = (guest.json["error"] as? [String: Any])?["message"] as? String ?? ""
        #expect(guest.status == 422 && guest.errorCode == "not_supported", "\(guest.json)")
        #expect(message.contains("usermod -a -G libvirt-qemu \(host.user)") && message.contains("sysuser"), "the reason says what to do: \(message)")
        let admin = try await Self.connect(host.uri)
        let xml = try #require(try admin.domain(named: "vms-\(id)")).xmlDescription()
        #expect(!xml.contains("qemu:commandline"), "no NIC: \(xml)")
        #expect(!FileManager.default.fileExists(atPath: "/tmp/vmsessiond-sysnet-\(uid)"), "no sandbox directory on the host")

        try await api.withEvents(session: id, token: token) { log in
            #expect(try await api.call(.POST, session + "/close", token: token).status == 202)
            _ = try await log.state("closed", timeout: .seconds(60))
        }
        #expect(try await Self.leftOnHost(host.uri).isEmpty)
        try await daemon.stop()
    }
}
