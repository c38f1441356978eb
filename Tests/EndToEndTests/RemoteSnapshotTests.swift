import Foundation
import Testing
import VMSessionClient

/// Snapshots and templates of a session on a remote host (issues 21 and 22), end to end: the real daemon, a libvirt
/// host reached over real SSH (``SSHLibvirtHost``) with a real appliance guest under TCG. The snapshot lives in the
/// session's qcow2 volume on the host, the template's memory image and disk are volumes there, and a session from
/// the template is placed on that host and restored there warm; nothing is left on the host at the end.
extension RealGuestSuites.RemoteHostTests {
    @Test("on an SSH host: a revert brings back the guest's memory (markers from before the snapshot, none from after); a template made from the remote session starts a second session on the same host warm, running its own user-data; a session from the template is refused while the lab drains, not opened elsewhere; both survive a daemon restart, and a daemon killed mid-snapshot lists what libvirt kept there; closing both and deleting the template leaves nothing on the host")
    func snapshotsAndTemplatesOnARemoteHost() async throws {
        let lab = try await Self.startLab("snap")
        let (host, state, daemon) = (lab.host, lab.state, lab.daemon)
        defer { host.tearDown() }
        defer { daemon.kill9() }  // after a failure; the test stops it itself
        // The local host takes no new sessions, so placement has only the lab.
        _ = try await lab.control.drainHost("local")

        var api = APIClient(port: daemon.port)
        let admin = try daemon.adminToken()
        let (id, token) = try await api.newSession("remote-snap")
        let session = "/api/v1/sessions/\(id)"
        typealias Snap = RealGuestSuites.SnapshotTests
        #expect(try await Snap.operation(api, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#)["status"] as? String == "succeeded")
        #expect(try await lab.control.session(id).host?.name == "lab")
        #expect(try await Snap.operation(api, session + "/start", token: token, body: #"{"userData":"\#(Snap.userData)"}"#)["status"] as? String == "succeeded")
        let console = try #require(await Self.relayedConsole(under: state, of: id), "the daemon relays the remote console")
        let before = try await Snap.waitForTick(console) { $0.tick >= 3 }

        // A snapshot of the running guest, in its disk volume on the host: counted in bytes.
        let taken = try await Snap.operation(api, session + "/snapshots", token: token, body: #"{"name":"with-markers"}"#)
        #expect(taken["status"] as? String == "succeeded", "\(taken)")
        let atSnapshot = Snap.ticks(console).last?.tick ?? 0
        let listed = try #require((try await api.call(.GET, session + "/snapshots", token: token)["snapshots"] as? [[String: Any]])?.first)
        #expect(listed["state"] as? String == "running" && (listed["bytes"] as? Int ?? 0) > 0, "\(listed)")
        #expect(try lab.admin.domain(named: "vms-\(id)")?.snapshotNames() == ["with-markers"], "libvirt on the host keeps it")

        // Markers written after it are gone after the revert; those from before are back.
        let later = try await Snap.waitForTick(console) { $0.tick >= atSnapshot + 4 }
        #expect(try await api.call(.POST, session + "/pause", token: token).status == 200)
        try await Task.sleep(for: .milliseconds(500))
        let offset = Snap.consoleSize(console)
        let reverted = try await Snap.operation(api, session + "/snapshots/with-markers/revert", token: token)
        #expect(reverted["status"] as? String == "succeeded", "\(reverted)")
        #expect(try await api.call(.GET, session, token: token)["state"] as? String == "running")
        let after = try await Snap.waitForTick(console, after: offset)
        #expect(after.markers == after.tick, "the guest holds the markers of its own past only: \(after)")
        #expect(after.tick >= before.tick + 1, "markers written before the snapshot are back (\(after) after \(before))")
        #expect(after.tick <= atSnapshot + 2 && after.tick < later.tick, "markers written after the snapshot are gone (\(after); reached \(later))")

        // A template of the remote session: its files stay on the lab, and the session runs on.
        let made = try await Snap.operation(api, "/api/v1/templates", token: admin, body: #"{"name":"remote-warm","fromSession":"\#(id)"}"#)
        #expect(made["status"] as? String == "succeeded", "\(made)")
        let template = try #require(try await RealGuestSuites.TemplateTests.templateNames(api, admin: admin)["remote-warm"])
        #expect(template["host"] as? String == "lab" && (template["bytes"] as? Int ?? 0) > 0, "\(template)")
        let volumes = try #require(try lab.admin.storagePool(named: "vmsessiond")).allVolumes().map(\.name)
        #expect(volumes.contains("tmpl-remote-warm.memory.save") && volumes.contains("tmpl-remote-warm.disk.qcow2"), "\(volumes)")
        let runsOn = Snap.consoleSize(console)
        _ = try await Snap.waitForTick(console, after: runsOn)

        // The daemon restarts: the host comes back, the snapshot and the template are still there.
        try await daemon.stop()
        try await daemon.start()
        api = APIClient(port: daemon.port)
        let control = VMSessionClient(baseURL: "http://127.0.0.1:\(daemon.port)", token: admin)
        let (back, _) = try await Self.waitForHost("lab", control, within: .seconds(60)) { $0.state == "connected" }
        #expect(back.state == "connected", "\(back)")
        #expect(try await Snap.snapshotNames(api, session, token: token) == ["with-markers"])
        #expect(try await RealGuestSuites.TemplateTests.templateNames(api, admin: admin)["remote-warm"] != nil)

        // A session from the template goes to the lab, resumes the guest warm there and runs its own user-data.
        let (warm, warmToken) = try await api.newSession("remote-warm-1")
        let warmPath = "/api/v1/sessions/\(warm)"
        #expect(try await Snap.operation(api, warmPath + "/open", token: warmToken, body: #"{"version":"remote-warm"}"#)["status"] as? String == "succeeded")
        #expect(try await control.session(warm).host?.name == "lab")
        let userData = RealGuestSuites.TemplateTests.own("R")
        #expect(try await Snap.operation(api, warmPath + "/start", token: warmToken, body: #"{"userData":"\#(userData)"}"#)["status"] as? String == "succeeded")
        let warmConsole = try #require(await Self.relayedConsole(under: state, of: warm))
        try await RealGuestSuites.TemplateTests.waitFor("the warm session's own user-data") {
            RealGuestSuites.TemplateTests.lines(warmConsole).contains { $0.contains("TPLFILES R own-R END") }
        }
        let resumed = try await Snap.waitForTick(warmConsole)
        #expect(resumed.tick > 1, "the template's guest goes on counting rather than booting: \(resumed)")
        #expect(!RealGuestSuites.TemplateTests.lines(warmConsole).contains { $0.contains("VMSESSION-APPLIANCE: booted") }, "it did not boot")
        // The template is in use: it cannot go.
        #expect(try await api.call(.DELETE, "/api/v1/templates/remote-warm", token: admin).status == 409)

        // With the lab drained, a session from the template is refused, naming the lab, and not opened elsewhere,
        // though the local host takes sessions again meanwhile; it stays closed and does not count as the template's.
        _ = try await control.drainHost("local", draining: false)
        _ = try await control.drainHost("lab")
        let (elsewhere, elsewhereToken) = try await api.newSession("remote-warm-2")
        let refused = try await api.call(.POST, "/api/v1/sessions/\(elsewhere)/open", token: elsewhereToken, body: #"{"version":"remote-warm"}"#)
        #expect(refused.status == 507 && refused.errorCode == "insufficient_resources", "\(refused.json)")
        let message = (refused["error"] as? [String: Any])?["message"] as? String ?? ""
        #expect(message.contains("'lab'") && message.contains("draining"), "\(refused.json)")
        #expect(try await api.call(.GET, "/api/v1/sessions/\(elsewhere)", token: elsewhereToken)["state"] as? String == "closed")
        #expect(try await RealGuestSuites.TemplateTests.templateNames(api, admin: admin)["remote-warm"]?["sessions"] as? [String] == [warm])
        _ = try await control.drainHost("lab", draining: false)
        _ = try await control.drainHost("local")

        // The daemon is killed in the middle of a snapshot: started again (before the lab is connected: what the killed
        // run left is settled once the host answers), the session lists exactly the snapshots libvirt keeps there,
        // and its snapshots still work.
        let midway = try await api.call(.POST, session + "/snapshots", token: token, body: #"{"name":"midway"}"#)
        #expect(midway.status == 202, "\(midway.json)")
        try await Task.sleep(for: .milliseconds(150))
        daemon.kill9()
        try await daemon.start()
        api = APIClient(port: daemon.port)
        let afterKill = VMSessionClient(baseURL: "http://127.0.0.1:\(daemon.port)", token: admin)
        let (again, _) = try await Self.waitForHost("lab", afterKill, within: .seconds(60)) { $0.state == "connected" }
        #expect(again.state == "connected", "\(again)")
        var kept: [String] = []
        var listedNow: [String] = []
        let clock = ContinuousClock()
        let settleBy = clock.now + .seconds(30)
        repeat {
            kept = (try lab.admin.domain(named: "vms-\(id)")?.snapshotNames() ?? []).sorted()
            listedNow = try await Snap.snapshotNames(api, session, token: token).sorted()
            if listedNow == kept { break }
            try await Task.sleep(for: .milliseconds(250))
        } while clock.now < settleBy
        #expect(listedNow == kept && kept.contains("with-markers"), "the daemon lists \(listedNow), libvirt on the host keeps \(kept)")
        // libvirt on the host finishes (or drops) the snapshot on its own, the VM paused meanwhile; the session follows
        // its VM back to running.
        var seen: String?
        repeat {
            seen = try await api.call(.GET, session, token: token)["state"] as? String
            if seen == "running" { break }
            try await Task.sleep(for: .milliseconds(250))
        } while clock.now < settleBy + .seconds(30)
        #expect(seen == "running", "the session is \(String(describing: seen))")
        let revertedAgain = try await Snap.operation(api, session + "/snapshots/with-markers/revert", token: token)
        #expect(revertedAgain["status"] as? String == "succeeded", "\(revertedAgain)")

        // Closing the warm session leaves the template and the first session as they are.
        #expect(try await Snap.operation(api, warmPath + "/close", token: warmToken)["status"] as? String == "succeeded")
        let still = try #require(try lab.admin.storagePool(named: "vmsessiond")).allVolumes().map(\.name)
        #expect(still.contains("tmpl-remote-warm.disk.qcow2") && !still.contains { $0.contains(warm) }, "\(still)")
        _ = try await Snap.waitForTick(console, after: Snap.consoleSize(console))
        #expect(try await Snap.operation(api, session + "/close", token: token)["status"] as? String == "succeeded")
        #expect(try await api.call(.DELETE, "/api/v1/templates/remote-warm", token: admin).status == 204)
        let left = try await Self.leftOnHost(host.uri)
        #expect(left.isEmpty, "no VM, snapshot, template or base volume is left on the host: \(left)")
        try await daemon.stop()
    }
}
