import Foundation
import Libvirt
import Testing
import VMSessionClient

/// Sessions on a remote host end to end (issue 22): the real daemon places a page's session on a libvirt host
/// reached over real SSH (``SSHLibvirtHost``), where a real appliance guest runs under TCG; the session is driven
/// through the HTTP API as any other, survives its host's loss (the owner can still close it), and when the host
/// returns the daemon removes what the closed session left there.
extension RealGuestSuites.RemoteHostTests {
    /// The console log the daemon keeps for a session on a remote host (relayed from libvirt's console stream).
    /// The daemon's relayed copy of a remote VM's console, once it is there: the relay opens libvirt's console
    /// stream as the VM starts, so the file may come a moment after the session says `running`.
    static func relayedConsole(under state: String, of id: String, timeout: Duration = .seconds(30)) async -> String? {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        repeat {
            let enumerator = FileManager.default.enumerator(atPath: state + "/hosts")
            while let path = enumerator?.nextObject() as? String {
                if path.hasSuffix("/console.log"), path.contains(id) { return state + "/hosts/" + path }
            }
            try? await Task.sleep(for: .milliseconds(100))
        } while clock.now < deadline
        return nil
    }

    @Test("a session placed on an SSH host runs the appliance there: open, start with user-data seen on the relayed console, pause, resume, hibernate and restore, a screenshot, the cap refused; its host's loss is told to it and it can still be closed; back, the host is left with no VM or volume")
    func sessionOnARemoteHost() async throws {
        let lab = try await Self.startLab("session")
        let (host, admin, state, daemon, control) = (lab.host, lab.admin, lab.state, lab.daemon, lab.control)
        defer { host.tearDown() }
        defer { daemon.kill9() }  // after a failure; the test stops it itself
        // The local host takes no new sessions, so placement has only the lab.
        _ = try await control.drainHost("local")

        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("far-away")
        let session = "/api/v1/sessions/\(id)"
        try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#).status == 202)
            _ = try await log.state("open")
            let opened = try await api.typed(token: token).session(id)
            #expect(opened.host?.name == "lab", "\(String(describing: opened.host))")
            #expect(opened.host?.uri == nil, "a page does not see the host's URI")
            #expect(try await control.session(id).host?.uri == host.uri, "the admin does")
            #expect(try await control.host("lab").sessions == 1)

            let userData = #"#!/bin/sh\necho user-data says hello from afar\n"#
            #expect(try await api.call(.POST, session + "/start", token: token, body: #"{"userData":"\#(userData)"}"#).status == 202)
            _ = try await log.state("running")
            let console = try #require(await Self.relayedConsole(under: state, of: id), "the daemon relays the remote console")
            try await Self.waitForFile(console, containing: "user-data says hello from afar")
            #expect(Self.networkHelpers(of: host).count == 3, "its guest network runs on the host: \(host.processes())")
            let domains = try admin.allDomains().map(\.name)
            #expect(domains.contains { $0.contains(id) }, "the VM runs on the host: \(domains)")

            #expect(try await api.call(.POST, session + "/pause", token: token).status == 200)
            _ = try await log.state("paused")
            #expect(try await api.call(.POST, session + "/resume", token: token).status == 200)
            _ = try await log.next("stateChanged") { $0["state"] as? String == "running" && $0["previous"] as? String == "paused" }

            let shot = try await api.call(.GET, session + "/screenshot", token: token)
            #expect(shot.status == 200, "\(shot.json)")
            let cap = try await api.call(.PUT, session + "/execution-cap", token: token, body: #"{"cap":25}"#)
            #expect(cap.status == 422 && cap.errorCode == "not_supported", "a session libvirt on another user has no cap: \(cap.json)")

            #expect(try await api.call(.POST, session + "/hibernate", token: token).status == 202)
            _ = try await log.state("saved")
            #expect(host.processes().allSatisfy { !$0.command.contains("qemu-system") }, "no QEMU runs on the host while hibernated")
            #expect(try await api.call(.POST, session + "/start", token: token).status == 202)
            let runningAgain = await log.count
            _ = try await log.next("stateChanged", after: runningAgain) { $0["state"] as? String == "running" }

            // The host's libvirtd dies and cannot start again: the session is told, its calls say why, and the owner
            // can still close it.
            let socketDirectory = host.home + "/.cache/libvirt"
            let daemonPID = try #require(host.libvirtdPID)
            try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: socketDirectory)
            kill(daemonPID, SIGKILL)
            let lost = try await log.next("hostUnreachable", timeout: .seconds(30))
            #expect(lost.payload["host"] as? String == "lab", "\(lost.payload)")
            let seen = try await api.typed(token: token).session(id)
            #expect(seen.host?.state == "unreachable" && seen.host?.reason?.isEmpty == false, "\(String(describing: seen.host))")
            let refused = try await api.call(.POST, session + "/pause", token: token)
            #expect(refused.status == 503 && refused.errorCode == "host_unreachable", "\(refused.json)")
            let closing = try await api.call(.POST, session + "/close", token: token)
            #expect(closing.status == 202 || closing.status == 200, "\(closing.json)")
            _ = try await log.state("closed", timeout: .seconds(60))
        }

        // Back: the daemon reconnects and removes the closed session's VM and volumes from the host.
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: host.home + "/.cache/libvirt")
        let (back, backAfter) = try await Self.waitForHost("lab", control, within: .seconds(60)) { $0.state == "connected" }
        #expect(back.state == "connected", "\(back)")
        print("lab back after \(backAfter)")
        let left = try await Self.leftOnHost(host.uri)
        #expect(left.isEmpty, "no VM or volume of the closed session is left on the host: \(left)")
        // Its guest network's helpers (which outlived libvirtd with its QEMU) and files went with it.
        #expect(Self.networkHelpers(of: host).isEmpty, "\(host.processes())")
        #expect(!FileManager.default.fileExists(atPath: host.home + "/.cache/vmsessiond-net"))
        #expect(try await control.host("lab").sessions == 0)
        try await daemon.stop()
    }
}
