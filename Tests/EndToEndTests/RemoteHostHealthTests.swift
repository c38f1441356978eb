import Foundation
import Libvirt
import Synchronization
import Testing

/// Connection health over SSH: a host whose libvirt dies, or whose transport stops answering, is reported
/// closed by libvirt itself (close callback, keepalive) within seconds.
extension RealGuestSuites.RemoteHostTests {
    /// Registers a close handler on `connection` and returns the stream of reasons it reports.
    static func closeReasons(of connection: Connection) throws -> AsyncStream<ConnectionCloseReason> {
        let (stream, continuation) = AsyncStream<ConnectionCloseReason>.makeStream()
        try connection.onClose { reason in
            continuation.yield(reason)
            continuation.finish()
        }
        return stream
    }

    /// The first reason `reasons` reports, or nil if none comes within `timeout`.
    static func first(_ reasons: AsyncStream<ConnectionCloseReason>, within timeout: Duration) async -> ConnectionCloseReason? {
        await withTaskGroup(of: ConnectionCloseReason?.self) { group in
            group.addTask {
                for await reason in reasons { return reason }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    @Test("a host whose libvirtd is killed is reported closed (end of file) within seconds while another host's connection stays alive, and a new connection autostarts its libvirtd again")
    func killedDaemonIsReported() async throws {
        let hosts = try await Self.startHosts(2)
        defer { for host in hosts { host.tearDown() } }
        let doomed = try await Self.connect(hosts[0].uri)
        let other = try await Self.connect(hosts[1].uri)
        for connection in [doomed, other] { #expect(try connection.setKeepAlive(interval: 1, count: 3)) }
        let reasons = try Self.closeReasons(of: doomed)
        let otherReasons = try Self.closeReasons(of: other)
        #expect(doomed.isAlive)

        let daemon = try #require(hosts[0].libvirtdPID, "the host runs a session libvirtd")
        let clock = ContinuousClock()
        let killed = clock.now
        kill(daemon, SIGKILL)
        let reason = await Self.first(reasons, within: .seconds(20))
        print("libvirtd killed: connection reported \(reason.map(String.init(describing:)) ?? "nothing") after \(killed.duration(to: clock.now))")
        #expect(reason == .endOfFile)
        #expect(!doomed.isAlive)
        #expect(throws: LibvirtError.self) { try doomed.allDomains() }

        // The other host saw nothing and still answers.
        #expect(await Self.first(otherReasons, within: .seconds(3)) == nil)
        #expect(other.isAlive)
        #expect(try other.allDomains().isEmpty)

        // The host "returns": a new connection autostarts a new libvirtd for the user.
        let again = try await Self.connect(hosts[0].uri)
        #expect(try again.allDomains().isEmpty)
        let restarted = try #require(hosts[0].libvirtdPID)
        #expect(restarted != daemon)
    }

    @Test("a host whose SSH session stops answering (sshd stopped, TCP still open) is reported closed by keepalive within seconds")
    func blockedTransportIsReported() async throws {
        let hosts = try await Self.startHosts(1)
        defer { hosts[0].tearDown() }
        let connection = try await Self.connect(hosts[0].uri)
        #expect(try connection.setKeepAlive(interval: 1, count: 2))
        let reasons = try Self.closeReasons(of: connection)
        let sessions = hosts[0].sessionProcesses()
        #expect(!sessions.isEmpty, "sshd serves the libvirt connection")

        let clock = ContinuousClock()
        let stopped = clock.now
        for session in sessions { kill(session.pid, SIGSTOP) }
        defer { for session in sessions { kill(session.pid, SIGCONT) } }
        // Nothing closed the transport: only the missing keepalive answers can tell.
        let reason = await Self.first(reasons, within: .seconds(30))
        print("sshd stopped: connection reported \(reason.map(String.init(describing:)) ?? "nothing") after \(stopped.duration(to: clock.now))")
        #expect(reason == .keepalive)
        #expect(!connection.isAlive)
        #expect(hosts[0].libvirtdPID != nil, "the host's libvirtd itself still runs")
    }

    @Test("keepalive that sends no probes of its own (count 0, as the daemon sets it): a connection silent on our side stays open on the host libvirtd's own probes, and is closed by keepalive within the interval once the host's SSH stops answering")
    func keepaliveWithoutOwnProbes() async throws {
        let hosts = try await Self.startHosts(1)
        defer { hosts[0].tearDown() }
        let connection = try await Self.connect(hosts[0].uri)
        #expect(try connection.setKeepAlive(interval: 8, count: 0))
        // The close as libvirt reports it, and when (one stream of reasons can be awaited only once).
        let clock = ContinuousClock()
        let closed = Mutex<(reason: ConnectionCloseReason, at: ContinuousClock.Instant)?>(nil)
        try connection.onClose { reason in closed.withLock { $0 = (reason, clock.now) } }

        // No call for 20 s, more than twice the interval: only the host's probes (every 5 s of silence) are heard.
        try await Task.sleep(for: .seconds(20))
        #expect(closed.withLock { $0 } == nil, "a live host is not taken for a silent one")
        #expect(connection.isAlive)
        #expect(try connection.allDomains().isEmpty)

        let sessions = hosts[0].sessionProcesses()
        let stopped = clock.now
        for session in sessions { kill(session.pid, SIGSTOP) }
        defer { for session in sessions { kill(session.pid, SIGCONT) } }
        while closed.withLock({ $0 }) == nil, stopped.duration(to: clock.now) < .seconds(30) {
            try await Task.sleep(for: .milliseconds(100))
        }
        let seen = closed.withLock { $0 }
        let after = seen.map { stopped.duration(to: $0.at) }
        print("sshd stopped, keepalive without probes: connection reported \(seen.map { String(describing: $0.reason) } ?? "nothing") after \(after.map { "\($0)" } ?? "30 s")")
        #expect(seen?.reason == .keepalive)
        #expect(after.map { $0 < .seconds(12) } == true, "closed within the interval (8 s) and the timer's second")
        #expect(!connection.isAlive)
    }
}
