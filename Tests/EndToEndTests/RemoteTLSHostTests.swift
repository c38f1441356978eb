import Foundation
import Libvirt
import Testing
import VMSessionClient
import VMSessionTestSupport

/// A session on a host reached over TLS (issue 22: `qemu+tls://` beside `qemu+ssh://`), a user's session libvirt
/// and root's system libvirt: everything that goes through libvirt's own protocol works as on any other host, the
/// display (a host-local socket, reached only through an SSH transport) is refused with a reason that names the
/// transport, and a client the host's CA did not sign never connects. On the system libvirt the daemon makes its
/// own pool, and the execution cap is libvirt's scheduler quota.
extension RealGuestSuites.RemoteHostTests {
    @Test(
        "a session placed on a TLS host runs the appliance there: user-data on the relayed console, pause, resume, a screenshot, the cap where libvirt offers one, hibernate and restore, close with nothing left; the display is refused as not offered over TLS, and a client certificate the host does not trust leaves its host unreachable with the reason",
        arguments: [TLSLibvirtHost.Kind.session, .system])
    func sessionOnATLSHost(kind: TLSLibvirtHost.Kind) async throws {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "make appliance first: \(appliance)")
        let host = try await Command.onThread { try TLSLibvirtHost.start(kind) }
        defer { host.tearDown() }
        let admin = try await Self.connect(host.uri)
        #expect(try admin.driverName() == "QEMU")
        // A session libvirt needs the admin's pool (the daemon cannot learn the user's home); a system one gets the
        // daemon's own.
        if kind == .session { try Self.definePool(on: admin, at: host.home + "/pool") }
        let directory = try TemporaryDirectory("vms-e2e-tls")
        let state = directory.path + "/state"
        let daemon = DaemonProcess(
            stateDirectory: state,
            arguments: ["--libvirt-uri", "test:///default", "--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "5"])
        try await daemon.start()
        defer { daemon.kill9() }  // after a failure; the test stops it itself
        let control = VMSessionClient(baseURL: "http://127.0.0.1:\(daemon.port)", token: try daemon.adminToken())

        // A certificate from a CA the host does not trust: never connected, and the reason says it was TLS.
        _ = try await control.addHost(HostRequest(name: "stranger", uri: host.untrustedClientURI))
        let (refused, _) = try await Self.waitForHost("stranger", control, within: .seconds(30)) { $0.state == "unreachable" }
        #expect(refused.state == "unreachable", "\(refused)")
        let reason = refused.reason ?? ""
        #expect(reason.localizedCaseInsensitiveContains("certificate") || reason.localizedCaseInsensitiveContains("TLS"), "\(reason)")

        _ = try await control.addHost(HostRequest(name: "tls", uri: host.uri))
        let (connected, after) = try await Self.waitForHost("tls", control, within: .seconds(120)) { $0.state == "connected" }
        #expect(connected.state == "connected" && connected.capacity != nil, "\(connected)")
        // The host view says before any session that guests get no network there, and why (the sandbox needs SSH).
        #expect(connected.guestNetwork?.available == false && connected.guestNetwork?.reason?.contains("SSH") == true, "\(connected)")
        #expect(refused.guestNetwork == nil, "not known of a host never connected: \(refused)")
        print("TLS host connected after \(after)")
        _ = try await control.drainHost("local")

        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("over-tls")
        let session = "/api/v1/sessions/\(id)"
        try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#).status == 202)
            _ = try await log.state("open")
            #expect(try await api.typed(token: token).session(id).host?.name == "tls")

            let userData = #"#!/bin/sh\necho user-data says hello over tls\n"#
            #expect(try await api.call(.POST, session + "/start", token: token, body: #"{"userData":"\#(userData)"}"#).status == 202)
            _ = try await log.state("running")
            let console = try #require(await Self.relayedConsole(under: state, of: id), "the daemon relays the remote console")
            try await Self.waitForFile(console, containing: "user-data says hello over tls")
            #expect(host.processes().contains { $0.command.hasPrefix("qemu-system") }, "the guest's QEMU runs as the TLS host's user")

            #expect(try await api.call(.POST, session + "/pause", token: token).status == 200)
            _ = try await log.state("paused")
            #expect(try await api.call(.POST, session + "/resume", token: token).status == 200)
            _ = try await log.next("stateChanged") { $0["state"] as? String == "running" && $0["previous"] as? String == "paused" }

            // A screenshot is libvirt's own stream: it works over TLS.
            let shot = try await api.call(.GET, session + "/screenshot", token: token)
            #expect(shot.status == 200, "\(shot.json)")
            let cap = try await api.call(.PUT, session + "/execution-cap", token: token, body: #"{"cap":25}"#)
            switch kind {
            case .session:
                #expect(cap.status == 422 && cap.errorCode == "not_supported", "a session libvirt offers no cap: \(cap.json)")
            case .system:
                #expect(cap.status == 200, "a system libvirt caps through its scheduler quota: \(cap.json)")
                _ = try await log.next("executionCapChanged") { $0["cap"] as? Int == 25 }
            }
            // The display is a socket on the host: no SSH transport, no way to it, and the answer says so.
            let display = try await api.call(.GET, session + "/display", token: token)
            #expect(display.status == 422 && display.errorCode == "not_supported", "\(display.json)")
            #expect(((display.json["error"] as? [String: Any])?["message"] as? String ?? "").contains("SSH"), "\(display.json)")
            // So is the guest's network sandbox, run on a host through SSH: no NIC, and the guest API says why.
            let guest = try await api.call(.GET, session + "/guest/", token: token)
            #expect(guest.status == 422 && guest.errorCode == "not_supported", "\(guest.json)")
            #expect(((guest.json["error"] as? [String: Any])?["message"] as? String ?? "").contains("SSH"), "\(guest.json)")

            #expect(try await api.call(.POST, session + "/hibernate", token: token).status == 202)
            _ = try await log.state("saved")
            #expect(!host.processes().contains { $0.command.hasPrefix("qemu-system") }, "no QEMU on the host while hibernated")
            let savedAt = await log.count
            #expect(try await api.call(.POST, session + "/start", token: token).status == 202)
            _ = try await log.next("stateChanged", after: savedAt) { $0["state"] as? String == "running" }

            #expect(try await api.call(.POST, session + "/close", token: token).status == 202)
            _ = try await log.state("closed", timeout: .seconds(60))
        }
        if kind == .system {
            var isDirectory: ObjCBool = false
            #expect(
                FileManager.default.fileExists(atPath: host.home + "/images/vmsessiond", isDirectory: &isDirectory) && isDirectory.boolValue,
                "the daemon made its pool on the system libvirt")
        }
        let left = try await Self.leftOnHost(host.uri)
        #expect(left.isEmpty, "no VM or volume of the closed session is left on the TLS host: \(left)")
        #expect(!host.processes().contains { $0.command.hasPrefix("qemu-system") })
        try await daemon.stop()
    }
}
