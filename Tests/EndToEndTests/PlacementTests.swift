import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import VMSessionClient
import VMSessionTestSupport

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

        // An origin the admin restricted to hosts labelled room=a: its session goes to the lab, though the local host
        // (as many sessions, more free memory) would win otherwise; restricted to room=b, nothing fits.
        let page = "http://localhost:9417"
        let badLabels = await #expect(throws: VMSessionClientError.self) {
            try await admin.decide("deny", origin: page, hostLabels: ["room": "a"])
        }
        #expect(badLabels?.status == 400, "host labels go with approve")
        let approved = try await admin.decide("approve", origin: page, hostLabels: ["room": "a"])
        #expect(approved.hostLabels == ["room": "a"])
        let labelled = try await Self.openFromPage(base, origin: page, name: "labelled")
        #expect(labelled.status == 202, "\(labelled.body)")
        #expect(try await admin.session(labelled.id).host?.name == "lab")
        _ = try await admin.decide("approve", origin: page, hostLabels: ["room": "b"])
        let refusedByLabel = try await Self.openFromPage(base, origin: page, name: "nowhere")
        #expect(refusedByLabel.status == 507 && refusedByLabel.body.contains("not labelled room=b"), "\(refusedByLabel.body)")
        #expect(try await admin.session(refusedByLabel.id).state == "closed")
        try await admin.run("close", on: labelled.id)

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

    /// A page of `origin` asks for session `name` and opens it: the open's status and body, and the session's id.
    static func openFromPage(_ base: String, origin: String, name: String) async throws -> (id: String, status: UInt, body: String) {
        func send(_ method: HTTPMethod, _ path: String, token: String?, body: String) async throws -> (UInt, String) {
            var request = HTTPClientRequest(url: base + path)
            request.method = method
            request.headers.add(name: "Origin", value: origin)
            request.headers.add(name: "Content-Type", value: "application/json")
            if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
            request.body = .bytes(ByteBuffer(string: body))
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            return (response.status.code, String(buffer: try await response.body.collect(upTo: 1 << 20)))
        }
        let (_, granted) = try await send(.POST, "/api/v1/sessions", token: nil, body: #"{"name":"\#(name)","secret":"s3cret"}"#)
        let grant = try #require(try JSONSerialization.jsonObject(with: Data(granted.utf8)) as? [String: Any])
        let token = try #require(grant["token"] as? String)
        let id = try #require((grant["session"] as? [String: Any])?["id"] as? String)
        let (status, body) = try await send(.POST, "/api/v1/sessions/\(id)/open", token: token, body: #"{"cpus":1,"memory":128,"disk":64}"#)
        if status == 202, let reply = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let operation = (reply["operation"] as? [String: Any])?["id"] as? String
        {
            _ = try await send(.GET, "/api/v1/operations/\(operation)/wait?timeout=30", token: token, body: "")
        }
        return (id, status, body)
    }
}
