import Foundation
import Libvirt
import Testing
import VMSessionClient

/// A host whose SSH stalls in the middle of an operation (issue 22, and the crash `CHAOS_HOSTS=1 make chaos`
/// found: CVE-2024-4418 in libvirt 9.0's RPC client, reached when several threads made calls on one remote
/// connection). The real daemon, a real appliance guest on a host reached over real SSH, the host's sshd and its
/// session processes SIGSTOPped while a restore runs there.
extension RealGuestSuites.RemoteHostTests {
    /// Waits for the operation `id` to end (up to `timeout`) and returns its status.
    static func operationStatus(_ api: APIClient, _ id: String, token: String, timeout: Duration) async throws -> String? {
        let reply = try await api.call(.GET, "/api/v1/operations/\(id)/wait?timeout=\(Int(timeout.components.seconds))", token: token)
        return reply.json["status"] as? String
    }

    @Test("a host whose sshd is stopped in the middle of a restore there: the daemon stays up, the session is told the host is unreachable within seconds and its operation ends, a session on another host keeps working, the lost host's session closes; when sshd continues the host is connected again and nothing is left on it")
    func stalledHostMidRestore() async throws {
        let lab = try await Self.startLab("stall")
        let (host, state, daemon, control) = (lab.host, lab.state, lab.daemon, lab.control)
        defer { host.tearDown() }
        defer { daemon.kill9() }
        let daemonPID = try #require(daemon.processID)
        let api = APIClient(port: daemon.port)

        // A session on the local host (the test driver), placed there while the lab is drained…
        _ = try await control.drainHost("lab")
        let (nearby, nearbyToken) = try await api.newSession("close-by")
        for (action, body) in [("open", #"{"cpus":1,"memory":128,"disk":64}"#), ("start", "{}")] {
            let reply = try await api.call(.POST, "/api/v1/sessions/\(nearby)/\(action)", token: nearbyToken, body: body)
            #expect(reply.status == 202, "\(action): \(reply.json)")
            let operation = try #require((reply.json["operation"] as? [String: Any])?["id"] as? String)
            #expect(try await Self.operationStatus(api, operation, token: nearbyToken, timeout: .seconds(60)) == "succeeded", "\(action)")
        }
        // …and one on the lab, placed there while the local host is drained.
        _ = try await control.drainHost("lab", draining: false)
        _ = try await control.drainHost("local")
        let (id, token) = try await api.newSession("far-away")
        let session = "/api/v1/sessions/\(id)"

        try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#).status == 202)
            _ = try await log.state("open")
            #expect(try await api.typed(token: token).session(id).host?.name == "lab")
            #expect(try await api.call(.POST, session + "/start", token: token).status == 202)
            _ = try await log.state("running")
            let console = try #require(await Self.relayedConsole(under: state, of: id), "the daemon relays the remote console")
            try await Self.waitForFile(console, containing: Self.readyMarker)
            #expect(try await api.call(.POST, session + "/hibernate", token: token).status == 202)
            _ = try await log.state("saved")

            // The restore starts; its call is on the wire when the host's SSH stops answering (TCP stays open).
            let restore = try await api.call(.POST, session + "/start", token: token)
            #expect(restore.status == 202, "\(restore.json)")
            let operation = try #require((restore.json["operation"] as? [String: Any])?["id"] as? String)
            try await Task.sleep(for: .milliseconds(300))
            let stopped = [host.listenerPID] + host.sessionProcesses().map(\.pid)
            let clock = ContinuousClock()
            let stalled = clock.now
            for pid in stopped { kill(pid, SIGSTOP) }
            var continued = false
            defer { if !continued { for pid in stopped { kill(pid, SIGCONT) } } }

            let lost = try await log.next("hostUnreachable", timeout: .seconds(30))
            let noticed = stalled.duration(to: clock.now)
            print("sshd stopped mid-restore: hostUnreachable after \(noticed): \(lost.payload)")
            #expect(noticed < .seconds(20), "keepalive notices the stalled host within seconds")
            #expect(lost.payload["host"] as? String == "lab")
            // The restore's call does not hang on the dead connection: the operation ends.
            let ended = try await Self.operationStatus(api, operation, token: token, timeout: .seconds(60))
            print("the restore ended \(ended ?? "?") after \(stalled.duration(to: clock.now))")
            #expect(ended != nil && ended != "running" && ended != "pending", "the restore ended: \(ended ?? "no answer")")
            #expect(kill(daemonPID, 0) == 0, "the daemon is alive")

            // The session on the other host keeps working.
            let nearbyState = try await api.typed(token: nearbyToken).session(nearby).state
            #expect(nearbyState == "running", "\(nearbyState)")
            #expect(try await api.call(.POST, "/api/v1/sessions/\(nearby)/pause", token: nearbyToken).status == 200)
            #expect(try await api.call(.POST, "/api/v1/sessions/\(nearby)/resume", token: nearbyToken).status == 200)

            // The lost host's session says so and can be closed.
            let seen = try await api.typed(token: token).session(id)
            #expect(seen.host?.state == "unreachable", "\(String(describing: seen.host))")
            let closing = try await api.call(.POST, session + "/close", token: token)
            #expect(closing.status == 202 || closing.status == 200, "\(closing.json)")
            _ = try await log.state("closed", timeout: .seconds(60))

            for pid in stopped { kill(pid, SIGCONT) }
            continued = true
        }

        // sshd continues: the host is connected again and what the closed session left there is removed.
        let (back, backAfter) = try await Self.waitForHost("lab", control, within: .seconds(90)) { $0.state == "connected" }
        #expect(back.state == "connected", "\(back)")
        print("lab back after \(backAfter)")
        let left = try await Self.leftOnHost(host.uri)
        #expect(left.isEmpty, "no VM or volume of the closed session is left on the host: \(left)")
        #expect(kill(daemonPID, 0) == 0, "the daemon is alive")
        try await daemon.stop()
    }
}
