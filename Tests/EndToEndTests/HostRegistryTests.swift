import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
import VMSessionClient
import VMSessionTestSupport

/// The host registry end to end (issue 22): two real SSH hosts added with `vmsessionctl hosts add` to a real
/// daemon, followed by its host monitor over libvirt's remote protocol, each one's loss noticed within seconds
/// while the other stays connected, and each one found again when it returns.
extension RealGuestSuites.RemoteHostTests {
    /// Polls the daemon until host `name` satisfies `done`, for up to `timeout`; returns it as last seen, and how long it took.
    static func waitForHost(
        _ name: String, _ client: VMSessionClient, within timeout: Duration, _ done: (HostInfo) -> Bool
    ) async throws -> (host: HostInfo, after: Duration) {
        let clock = ContinuousClock()
        let started = clock.now
        var host = try await client.host(name)
        while !done(host), started.duration(to: clock.now) < timeout {
            try await Task.sleep(for: .milliseconds(100))
            host = try await client.host(name)
        }
        return (host, started.duration(to: clock.now))
    }

    @Test("two SSH hosts added with vmsessionctl are connected with capacity and latency; one's libvirtd killed, then its sshd stopped, makes it unreachable within seconds while the other stays connected, and it is connected again once restored")
    func hostsFollowedByTheDaemon() async throws {
        let hosts = try await Self.startHosts(2)
        defer { for host in hosts { host.tearDown() } }
        let directory = try TemporaryDirectory("vms-e2e-hosts")
        let daemon = DaemonProcess(stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default"])
        try await daemon.start()
        let url = "http://127.0.0.1:\(daemon.port)"
        let client = VMSessionClient(baseURL: url, token: try daemon.adminToken())
        func ctl(_ arguments: String...) async throws -> String {
            let (status, output) = try await ControlCommandTests.run(["--url", url, "--state-dir", daemon.stateDirectory] + arguments)
            #expect(status == 0, "vmsessionctl \(arguments.joined(separator: " ")): \(output)")
            return output
        }

        _ = try await ctl("hosts", "add", "alpha", hosts[0].uri, "--label", "room=a")
        _ = try await ctl("hosts", "add", "beta", hosts[1].uri, "--max-sessions", "2")
        for name in ["alpha", "beta"] {
            let (host, after) = try await Self.waitForHost(name, client, within: .seconds(30)) { $0.state == "connected" && $0.latencyMs != nil }
            print("host \(name) connected after \(after), latency \(host.latencyMs ?? -1) ms")
            #expect(host.state == "connected", "\(host)")
            #expect((host.capacity?.cpus ?? 0) > 0 && (host.capacity?.memory ?? 0) > 0, "\(host)")
            #expect(host.capacity?.freeMemory != nil)
            #expect(host.source == "admin" && host.sessions == 0)
        }
        #expect(try await client.host("alpha").labels == ["room": "a"])
        #expect(try await client.host("beta").maxSessions == 2)
        let listed = try await ctl("hosts", "list")
        #expect(listed.contains("alpha") && listed.contains("beta") && listed.contains("local"), "\(listed)")
        let betaSince = try await client.host("beta").since

        // 1. alpha's libvirtd dies and cannot start again (its socket directory is shut to its user).
        let socketDirectory = hosts[0].home + "/.cache/libvirt"
        let daemonPID = try #require(hosts[0].libvirtdPID)
        try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: socketDirectory)
        kill(daemonPID, SIGKILL)
        let (lost, lostAfter) = try await Self.waitForHost("alpha", client, within: .seconds(15)) { $0.state == "unreachable" }
        print("alpha with its libvirtd killed: \(lost.state) after \(lostAfter): \(lost.reason ?? "")")
        #expect(lost.state == "unreachable" && lostAfter < .seconds(10), "\(lost)")
        #expect(lost.reason?.isEmpty == false && lost.since != nil && lost.latencyMs == nil)
        var request = HTTPClientRequest(url: url + "/metrics")
        request.headers.add(name: "Authorization", value: "Bearer \(try daemon.adminToken())")
        let metrics = String(buffer: try await HTTPClient.shared.execute(request, timeout: .seconds(10)).body.collect(upTo: 1 << 22))
        #expect(metrics.contains(#"vmsessiond_host_up{host="alpha"} 0"#) && metrics.contains(#"vmsessiond_host_up{host="beta"} 1"#))
        let beta = try await client.host("beta")
        #expect(beta.state == "connected" && beta.since == betaSince, "beta never left: \(beta)")

        // While it is down the daemon keeps trying (each attempt fails), and the host stays unreachable since it was lost.
        try await Task.sleep(for: .seconds(3))
        let stillDown = try await client.host("alpha")
        #expect(stillDown.state == "unreachable" && stillDown.since == lost.since, "\(stillDown)")
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: socketDirectory)
        let (back, backAfter) = try await Self.waitForHost("alpha", client, within: .seconds(45)) { $0.state == "connected" }
        print("alpha with its libvirtd allowed again: \(back.state) after \(backAfter)")
        #expect(back.state == "connected", "\(back)")

        // 2. alpha's sshd stops answering: the listener and the session serving the daemon (TCP stays open).
        let stopped = [hosts[0].listenerPID] + hosts[0].sessionProcesses().map(\.pid)
        for pid in stopped { kill(pid, SIGSTOP) }
        defer { for pid in stopped { kill(pid, SIGCONT) } }
        let (hung, hungAfter) = try await Self.waitForHost("alpha", client, within: .seconds(30)) { $0.state == "unreachable" }
        print("alpha with its sshd stopped: \(hung.state) after \(hungAfter): \(hung.reason ?? "")")
        #expect(hung.state == "unreachable" && hungAfter < .seconds(15), "\(hung)")
        // New connections hang in the SSH handshake: each attempt gives up after the monitor's 10 s deadline.
        try await Task.sleep(for: .seconds(12))
        #expect(try await client.host("alpha").state == "unreachable")
        #expect(try await client.host("beta").since == betaSince, "beta never left")
        #expect(try await client.host("beta").state == "connected")

        for pid in stopped { kill(pid, SIGCONT) }
        let (again, againAfter) = try await Self.waitForHost("alpha", client, within: .seconds(45)) { $0.state == "connected" }
        print("alpha with its sshd going on: \(again.state) after \(againAfter)")
        #expect(again.state == "connected", "\(again)")

        // Removing a host closes the daemon's connection to it: no SSH session of alpha's is left.
        _ = try await ctl("hosts", "remove", "alpha")
        #expect(try await client.hosts().map(\.name) == ["beta", "local"])
        let clock = ContinuousClock()
        let removed = clock.now
        while !hosts[0].sessionProcesses().isEmpty, removed.duration(to: clock.now) < .seconds(15) {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(hosts[0].sessionProcesses().isEmpty, "the daemon let go of alpha's connection")
        #expect(!hosts[1].sessionProcesses().isEmpty, "and kept beta's")
        try await daemon.stop()
    }
}
