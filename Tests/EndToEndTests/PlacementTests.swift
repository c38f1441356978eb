import Foundation
import Testing
import VMSessionClient

/// Placement end to end (issue 22): the real daemon on libvirt's test driver with a second host added on
/// `test:///default`. The test driver can stand in for a host here: the daemon opens the second host's connection
/// and hypervisor of its own (with its own state directory), and the runtimes keep each host's VMs apart (the test
/// driver's default connection is shared within a process, so each host sees the other's domains; the daemon counts
/// a VM only on its session's host).
@Suite("Placement over two hosts (daemon process, test driver)", .serialized)
struct PlacementTests {
    @Test("sessions are placed by the rule and their view names the host (the URI for the admin only); a draining host takes none; a host holding sessions cannot be removed")
    func placedByTheRule() async throws {
        let directory = try TemporaryDirectory("vms-e2e-placement")
        let appliance = try directory.standInAppliance()
        let daemon = DaemonProcess(
            stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default", "--appliance-dir", appliance])
        try await daemon.start()
        let base = "http://127.0.0.1:\(daemon.port)"
        let admin = VMSessionClient(baseURL: base, token: try daemon.adminToken())

        _ = try await admin.addHost(HostRequest(name: "lab", uri: "test:///default", labels: ["room": "a"]))
        var lab = try await admin.host("lab")
        for _ in 0..<100 where lab.state != "connected" {
            try await Task.sleep(for: .milliseconds(100))
            lab = try await admin.host("lab")
        }
        #expect(lab.state == "connected", "\(lab)")
        let local = try await admin.host("local")
        let labCPUs = try #require(lab.capacity?.cpus)
        let localCPUs = try #require(local.capacity?.cpus)

        func open(_ name: String, cpus: Int) async throws -> (VMSessionClient, SessionInfo) {
            let grant = try await VMSessionClient(baseURL: base).requestSession(name: name, secret: "s3cret")
            let owner = VMSessionClient(baseURL: base, token: grant.token)
            let opened = try await owner.run("open", on: grant.session.id, body: ["cpus": .number(Double(cpus)), "memory": .number(128), "disk": .number(64)])
            #expect(opened.status == "succeeded", "\(opened)")
            return (owner, try await owner.session(grant.session.id))
        }

        // More CPUs than the local host has (libvirt's test host has 16): only the lab fits.
        if localCPUs < labCPUs {
            let (owner, wide) = try await open("wide", cpus: localCPUs + 1)
            #expect(wide.host?.name == "lab", "\(String(describing: wide.host))")
            #expect(wide.host?.state == "connected")
            #expect(wide.host?.uri == nil, "a page's token does not see the host's URI")
            #expect(try await admin.session(wide.id).host?.uri == "test:///default", "the admin does")
            #expect(try await admin.sessions().first { $0.id == wide.id }?.host?.name == "lab")
            try await owner.run("close", on: wide.id)
        }
        // The fewest sessions first: two sessions of one CPU land one on each host.
        let (firstOwner, first) = try await open("first", cpus: 1)
        let (_, second) = try await open("second", cpus: 1)
        #expect(Set([first.host?.name, second.host?.name]) == ["lab", "local"], "\(String(describing: first.host)) \(String(describing: second.host))")
        #expect(try await admin.host("lab").sessions == 1)
        #expect(try await admin.host("local").sessions == 1)
        let onLab = first.host?.name == "lab" ? first : second

        // Started and paused on its host; its lifecycle is the lab's.
        var owner = firstOwner
        if onLab.id != first.id {
            owner = VMSessionClient(baseURL: base, token: try await VMSessionClient(baseURL: base).requestSession(name: "second", secret: "s3cret").token)
        }
        #expect(try await owner.run("start", on: onLab.id).status == "succeeded")
        _ = try await owner.perform("pause", on: onLab.id)
        #expect(try await owner.session(onLab.id).state == "paused")

        // A host holding a session cannot be removed.
        let refused = await #expect(throws: VMSessionClientError.self) { try await admin.removeHost("lab") }
        #expect(refused?.status == 409 && refused?.message.contains("holds 1 session") == true, "\(String(describing: refused))")

        // Draining: new sessions all go to the local host, though the lab has fewer sessions after this close.
        _ = try await admin.drainHost("lab")
        for name in ["third", "fourth"] {
            let (_, session) = try await open(name, cpus: 1)
            #expect(session.host?.name == "local", "\(name): \(String(describing: session.host))")
        }
        // Closing the lab's session frees it: the host can go.
        try await owner.run("close", on: onLab.id)
        #expect(try await admin.host("lab").sessions == 0)
        try await admin.removeHost("lab")
        #expect(try await admin.hosts().map(\.name) == ["local"])
        try await daemon.stop()
    }
}
