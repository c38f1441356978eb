import Foundation
import Testing
import VMSessionClient

/// The guest's network on a remote host (issue 22): the sandbox a local guest gets (passt, pasta, socat, the
/// egress policy's routes), started on an SSH host (``SSHLibvirtHost``) through the daemon's SSH master, its API
/// socket forwarded home. The real daemon, a real appliance guest under TCG on the host, the egress test's world
/// around it (a stand-in internet and private network in namespaces of their own, a service on the host's loopback
/// and one on its own address; the SSH host is this machine, so its loopback is this one's).
extension RealGuestSuites.RemoteHostTests {
    /// The host user's sandbox helpers now, each with the name it was started as (`passt` and `pasta` re-execute
    /// themselves as `passt.avx2`, which keeps their `argv[0]`).
    /// The host's long-lived network helpers: not the child socat forks for each connection (a guest-API probe
    /// in flight), which lives only as long as that connection.
    static func networkHelpers(of host: SSHLibvirtHost) -> [(pid: Int32, name: String)] {
        let helpers: [(entry: ProcessEntry, name: String)] = host.processes().compactMap { entry in
            guard let data = FileManager.default.contents(atPath: "/proc/\(entry.pid)/cmdline"),
                let first = data.split(separator: 0).first
            else { return nil }
            let name = (String(decoding: first, as: UTF8.self) as NSString).lastPathComponent
            return ["passt", "pasta", "socat"].contains(name) ? (entry, name) : nil
        }
        let socats = Set(helpers.filter { $0.name == "socat" }.map(\.entry.pid))
        return helpers.filter { !($0.name == "socat" && socats.contains($0.entry.ppid)) }.map { ($0.entry.pid, $0.name) }
    }

    /// What the guest's probe printed on the relayed console (`EGRESS name reached|blocked`), by target.
    static func egressResults(in console: String) -> [String: Bool] {
        let text = (try? String(contentsOfFile: console, encoding: .utf8)) ?? ""
        var reached: [String: Bool] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            guard let at = line.range(of: "EGRESS ") else { continue }
            let words = line[at.upperBound...].split(separator: " ")
            if words.count >= 2, words[0] != "done" { reached[String(words[0])] = words[1].hasPrefix("reached") }
        }
        return reached
    }

    @Test("a guest on an SSH host gets the local sandbox there: its API answers through the daemon's proxy, under the default policy it reaches the internet and nothing of the host's loopback, its own address or a private network; hibernate ends the helpers and restore brings them back; a daemon restart keeps them and re-adds the forward; close leaves no helper and no file on the host")
    func guestNetworkOnARemoteHost() async throws {
        let world = try await RealGuestSuites.GuestEgressTests.World.make()
        defer { world.tearDown() }
        let lab = try await Self.startLab("net")
        let (host, state, daemon) = (lab.host, lab.state, lab.daemon)
        defer { host.tearDown() }
        defer { daemon.kill9() }  // after a failure; the test stops it itself
        _ = try await lab.control.drainHost("local")

        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("net-afar")
        let session = "/api/v1/sessions/\(id)"
        let marker = "remote-guest-api-\(UUID().uuidString.prefix(8).lowercased())"
        let probe = RealGuestSuites.GuestEgressTests.probeUserData(world.targets(daemonPort: daemon.port))
        let userData = "#!/bin/sh\necho \(marker) >/www/index.html\n" + probe.dropFirst("#!/bin/sh\n".count)
        try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#).status == 202)
            _ = try await log.state("open")
            #expect(try await api.typed(token: token).session(id).host?.name == "lab")
            let body = #"{"userData":\#(try RealGuestSuites.GuestEgressTests.jsonString(userData))}"#
            #expect(try await api.call(.POST, session + "/start", token: token, body: body).status == 202)
            _ = try await log.state("running")
            _ = try await log.next("apiAvailable", timeout: .seconds(120))
        }
        // The sandbox runs on the host, as its user: QEMU's NIC is connected to passt's socket there.
        let xml = try #require(try lab.admin.domain(named: "vms-\(id)")).xmlDescription()
        #expect(xml.contains("qemu:commandline") && xml.contains(host.home + "/.cache/vmsessiond-net/\(id)/net.sock"), "\(xml)")
        let helpers = Self.networkHelpers(of: host)
        #expect(helpers.map(\.name).sorted() == ["passt", "pasta", "socat"], "\(helpers) of \(host.processes())")

        let console = try #require(await Self.relayedConsole(under: state, of: id), "the daemon relays the remote console")
        try await Self.waitForFile(console, containing: "EGRESS done", timeout: .seconds(180))
        let reached = Self.egressResults(in: console)
        print("the remote guest's egress: \(reached)")
        #expect(
            reached == ["internet": true, "private": false, "host-loopback": false, "daemon": false, "host-address": false],
            "under the default policy (internet) the remote guest reaches the internet and nothing of its host: \(reached)")
        let view = try await api.call(.GET, session, token: token)
        #expect(view["egress"] as? String == "internet", "the session shows its policy: \(view.json)")

        // The guest's API, through the daemon's proxy (with the session's token), from the host's socat over SSH.
        let page = try await GuestAPITests.fetch(api.base + session + "/guest/", token: token)
        #expect(page.status == 200 && page.body.contains(marker), "\(page.status) \(page.body.prefix(300))")

        // Hibernation ends the helpers on the host; the restore starts them again and the API answers again.
        try await api.withEvents(session: id, token: token) { log in
            #expect(try await api.call(.POST, session + "/hibernate", token: token).status == 202)
            _ = try await log.state("saved")
            #expect(Self.networkHelpers(of: host).isEmpty, "no helper runs on the host while hibernated: \(host.processes())")
            let before = await log.count
            #expect(try await api.call(.POST, session + "/start", token: token).status == 202)
            _ = try await log.next("apiAvailable", after: before, timeout: .seconds(120))
        }
        let restored = try await GuestAPITests.fetch(api.base + session + "/guest/", token: token)
        #expect(restored.status == 200 && restored.body.contains(marker), "\(restored.status) \(restored.body.prefix(300))")

        // A daemon restart leaves the helpers running with the VM; once the host is connected again the forward is back.
        let running = Set(Self.networkHelpers(of: host).map(\.pid))
        #expect(running.count == 3, "passt, pasta and socat run again after the restore")
        try await daemon.stop()
        #expect(Set(Self.networkHelpers(of: host).map(\.pid)) == running, "the helpers outlive the daemon")
        try await daemon.start()
        let again = APIClient(port: daemon.port)
        let control = VMSessionClient(baseURL: "http://127.0.0.1:\(daemon.port)", token: try daemon.adminToken())
        _ = try await Self.waitForHost("lab", control, within: .seconds(60)) { $0.state == "connected" }
        try await Self.waitFor("the guest's API through the restarted daemon", timeout: .seconds(60)) {
            let answer = try await GuestAPITests.fetch(again.base + session + "/guest/", token: token)
            return answer.status == 200 && answer.body.contains(marker)
        }
        #expect(Set(Self.networkHelpers(of: host).map(\.pid)) == running, "the same helpers serve it: none was started again")

        // Close: no VM, no volume, no helper and no file of the sandbox is left on the host.
        try await again.withEvents(session: id, token: token) { log in
            #expect(try await again.call(.POST, session + "/close", token: token).status == 202)
            _ = try await log.state("closed", timeout: .seconds(60))
        }
        #expect(try await Self.leftOnHost(host.uri).isEmpty)
        #expect(Self.networkHelpers(of: host).isEmpty, "\(host.processes())")
        #expect(!FileManager.default.fileExists(atPath: host.home + "/.cache/vmsessiond-net"), "the sandbox's directories are gone")
        try await daemon.stop()
    }

    @Test("a guest on an SSH host whose QEMU dies on its own (killed on the host) loses its network helpers there within seconds, its session no longer says running, and a new start brings the network back: the guest's API answers again; close leaves nothing on the host")
    func stoppedGuestReleasesItsNetwork() async throws {
        // The egress test's world: pasta needs an upstream network on the host to give the guest an address at all.
        let world = try await RealGuestSuites.GuestEgressTests.World.make()
        defer { world.tearDown() }
        let lab = try await Self.startLab("netstop")
        let (host, daemon) = (lab.host, lab.daemon)
        defer { host.tearDown() }
        defer { daemon.kill9() }  // after a failure; the test stops it itself
        // The host view says the SSH host (which has passt, socat and the rest) gives guests a network; the local
        // host of this daemon (libvirt's test driver) does not, and says why.
        let labView = try await lab.control.host("lab")
        #expect(labView.guestNetwork == .init(available: true), "\(labView)")
        let localView = try await lab.control.host("local")
        #expect(localView.guestNetwork?.available == false && localView.guestNetwork?.reason?.contains("no QEMU") == true, "\(localView)")
        _ = try await lab.control.drainHost("local")

        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("net-stops")
        let session = "/api/v1/sessions/\(id)"
        let marker = "remote-net-stop-\(UUID().uuidString.prefix(8).lowercased())"
        let body = ##"{"userData":"#!/bin/sh\necho \##(marker) >/www/index.html\n"}"##
        try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#).status == 202)
            _ = try await log.state("open")
            #expect(try await api.call(.POST, session + "/start", token: token, body: body).status == 202)
            _ = try await log.state("running")
            _ = try await log.next("apiAvailable", timeout: .seconds(120))
        }
        #expect(Self.networkHelpers(of: host).count == 3, "passt, pasta and socat run on the host: \(host.processes())")

        // The guest's QEMU dies on the host, as an OOM kill or a crash would end it: no call of the daemon's.
        let qemu = host.processes().filter { $0.command.hasPrefix("qemu-system") }
        try #require(qemu.count == 1, "\(host.processes())")
        kill(qemu[0].pid, SIGKILL)
        let clock = ContinuousClock()
        let killed = clock.now
        try await Self.waitFor("no network helper of the stopped guest on the host", timeout: .seconds(15)) {
            Self.networkHelpers(of: host).isEmpty
        }
        print("the stopped remote guest's helpers went after \(killed.duration(to: clock.now))")
        var seen: String?
        try await Self.waitFor("the session to follow its VM", timeout: .seconds(15)) {
            seen = try await api.call(.GET, session, token: token)["state"] as? String
            return seen == "error" || seen == "open"
        }
        #expect(seen == "error" || seen == "open", "a VM whose QEMU died is not running: \(String(describing: seen))")
        #expect(try lab.admin.domain(named: "vms-\(id)")?.state().isActive == false)

        // Started again: the network is back with it, and the guest's API answers through the daemon's proxy.
        try await api.withEvents(session: id, token: token) { log in
            let before = await log.count
            #expect(try await api.call(.POST, session + "/start", token: token, body: body).status == 202)
            _ = try await log.next("apiAvailable", after: before, timeout: .seconds(120))
        }
        #expect(Self.networkHelpers(of: host).count == 3, "\(host.processes())")
        let page = try await GuestAPITests.fetch(api.base + session + "/guest/", token: token)
        #expect(page.status == 200 && page.body.contains(marker), "\(page.status) \(page.body.prefix(300))")

        try await api.withEvents(session: id, token: token) { log in
            #expect(try await api.call(.POST, session + "/close", token: token).status == 202)
            _ = try await log.state("closed", timeout: .seconds(60))
        }
        #expect(try await Self.leftOnHost(host.uri).isEmpty)
        #expect(Self.networkHelpers(of: host).isEmpty, "\(host.processes())")
        #expect(!FileManager.default.fileExists(atPath: host.home + "/.cache/vmsessiond-net"), "the sandbox's directories are gone")
        try await daemon.stop()
    }

}
