import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization
import Testing
import VMSessionCore
@testable import VMSessionAPI
@testable import VMSessionDaemon

/// The proxy's walls and limits through the real router and session manager (libvirt's test driver), with a
/// real HTTP server standing in for the guest: guest content kept off the daemon's origin, the deadline over
/// the whole exchange, slots freed when a page leaves, and probes that do not wait for one another.
@Suite("Guest API proxy: isolation and limits")
struct GuestProxyLimitsTests {
    static func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }

    @Test("a guest page is sandboxed off the daemon's origin: its CSP replaced, headers that act on the origin dropped, nosniff added")
    func guestPageSandboxed() async throws {
        try await StandInGuest.run { _, port in
            try await APIFixture.run(apiPort: { port }) { client, fixture in
                let (id, token) = try await GuestProxyRoutesTests.runningSession(client, fixture)
                let page = try await GuestProxyRoutesTests.text(
                    client, .get, "/api/v1/sessions/\(id)/guest/page.html", headers: Self.bearer(token))
                #expect(page.status == .ok)
                #expect(page.body == "<h1>guest page</h1>")
                #expect(page.headers[values: .contentSecurityPolicy] == [GuestProxyPolicy.contentSecurityPolicy])
                #expect(page.headers[.xContentTypeOptions] == "nosniff")
                #expect(page.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer")
                for name in ["Service-Worker-Allowed", "Clear-Site-Data", "Refresh", "Origin-Agent-Cluster", "Link", "WWW-Authenticate", "Set-Cookie"] {
                    #expect(page.headers[HTTPField.Name(name)!] == nil, "\(name)")
                }
                // A redirect off the guest is not passed on as one.
                let away = try await GuestProxyRoutesTests.text(client, .get, "/api/v1/sessions/\(id)/guest/away", headers: Self.bearer(token))
                #expect(away.status == .found)
                #expect(away.headers[.location] == nil)
            }
        }
    }

    @Test("a service worker's script is refused with 403 not_allowed before the guest is asked")
    func serviceWorkerRefused() async throws {
        try await StandInGuest.run { guest, port in
            try await APIFixture.run(apiPort: { port }) { client, fixture in
                let (id, token) = try await GuestProxyRoutesTests.runningSession(client, fixture)
                let refused = try await client.call(
                    .get, "/api/v1/sessions/\(id)/guest/sw.js", token: token, extraHeaders: [HTTPField.Name("Service-Worker")!: "script"])
                #expect(refused.status == .forbidden)
                #expect(refused.errorCode == "not_allowed")
                #expect(refused.headers[.xContentTypeOptions] == "nosniff", "JSON errors too")
                #expect(guest.served == 0)
            }
        }
    }

    @Test("the guest gets no Referer, and no header that carries the session's token")
    func noTokenInAnyHeader() async throws {
        try await StandInGuest.run { _, port in
            try await APIFixture.run(apiPort: { port }) { client, fixture in
                let (id, token) = try await GuestProxyRoutesTests.runningSession(client, fixture)
                let seen = try await client.call(
                    .get, "/api/v1/sessions/\(id)/guest/headers?token=\(token)",
                    extraHeaders: [
                        .referer: "http://127.0.0.1:7011/api/v1/sessions/\(id)/guest/x.html?token=\(token)",
                        HTTPField.Name("X-Copy")!: "token=\(token)", HTTPField.Name("X-Page")!: "kept",
                    ])
                #expect(seen.status == .ok)
                #expect(seen["x-page"] as? String == "kept")
                #expect(seen.json.keys.contains { $0.lowercased() == "referer" } == false, "\(seen.json)")
                #expect(seen.json.values.contains { "\($0)".contains(token) } == false, "\(seen.json)")
            }
        }
    }

    @Test("a guest body that dribbles past the deadline is cut at it, and its slot comes back")
    func dribbledBodyCut() async throws {
        try await StandInGuest.run { _, port in
            let policy = GuestProxyPolicy(maximumRequestBytes: 1024, timeout: .seconds(2), concurrentPerSession: 1)
            try await APIFixture.run(apiPort: { port }, guestProxy: policy) { client, fixture in
                let (id, token) = try await GuestProxyRoutesTests.runningSession(client, fixture)
                let started = ContinuousClock.now
                await #expect(throws: (any Error).self, "the body is cut, not completed") {
                    _ = try await GuestProxyRoutesTests.text(client, .get, "/api/v1/sessions/\(id)/guest/dribble", headers: Self.bearer(token))
                }
                let took = ContinuousClock.now - started
                print("dribbled body cut after \(took) (deadline 2 s, the guest's body takes 60 s)")
                #expect(took < .seconds(30), "cut at the deadline, not at the guest's minute")
                let next = try await GuestProxyRoutesTests.text(client, .get, "/api/v1/sessions/\(id)/guest/hello", headers: Self.bearer(token))
                #expect(next.status == .ok, "the one slot was given back")
            }
        }
    }

    @Test("a page that leaves while the guest's body stalls frees its slot at once, not at the deadline")
    func leavingPageFreesSlot() async throws {
        try await StandInGuest.run { _, port in
            let policy = GuestProxyPolicy(maximumRequestBytes: 1024, timeout: .seconds(60), concurrentPerSession: 1)
            try await APIFixture.run(apiPort: { port }, guestProxy: policy, testing: .live) { client, fixture in
                let (id, token) = try await GuestProxyRoutesTests.runningSession(client, fixture)
                let daemonPort = try #require(client.port)
                // A page that reads the head and the first chunk, then goes away.
                let head = try await RawClient.getThenLeave(
                    port: daemonPort, path: "/api/v1/sessions/\(id)/guest/stall", token: token, until: "first chunk;")
                #expect(head.hasPrefix("HTTP/1.1 200"), "\(head)")
                let left = ContinuousClock.now
                var status = HTTPResponse.Status.tooManyRequests
                while status == .tooManyRequests, ContinuousClock.now - left < .seconds(50) {
                    status = try await GuestProxyRoutesTests.text(
                        client, .get, "/api/v1/sessions/\(id)/guest/hello", headers: Self.bearer(token)).status
                    if status == .tooManyRequests { try await Task.sleep(for: .milliseconds(50)) }
                }
                let took = ContinuousClock.now - left
                print("slot free \(took) after the page left (deadline 60 s)")
                #expect(status == .ok)
                #expect(took < .seconds(30), "freed when the page left, not at the 60 s deadline")
            }
        }
    }

    @Test("a probe's deadline covers the whole answer: a guest that dribbles its body fails it; any complete answer passes")
    func probeCoversWholeAnswer() async throws {
        try await StandInGuest.run(dribbleRoot: true) { _, dribbler in
            try await StandInGuest.run { _, healthy in
                let started = ContinuousClock.now
                let slow = await GuestAPIMonitor.answers(GuestAPIRoute(address: .loopbackPort(dribbler)), timeout: .seconds(1), bodyBytes: 1 << 16)
                #expect(!slow)
                #expect(ContinuousClock.now - started < .seconds(30), "ended at its deadline, not the guest's minute")
                #expect(await GuestAPIMonitor.answers(GuestAPIRoute(address: .loopbackPort(healthy)), timeout: .seconds(10), bodyBytes: 1 << 16))
                // A body larger than the cap: read up to it, dropped, answered.
                #expect(await GuestAPIMonitor.answers(GuestAPIRoute(address: .loopbackPort(dribbler)), timeout: .seconds(10), bodyBytes: 1))
            }
        }
    }

    @Test("a guest that dribbles its probe answer delays no other session's apiAvailable")
    func probesIndependent() async throws {
        try await StandInGuest.run(dribbleRoot: true) { dribbling, dribbler in
            try await StandInGuest.run { _, healthy in
                let ports = PortQueue([dribbler, healthy])
                try await APIFixture.run(apiPort: { ports.next() }) { client, fixture in
                    var configuration = GuestAPIMonitor.Configuration()
                    configuration.searchInterval = .milliseconds(200)
                    // Longer than the test waits: the dribbler's probe stays in flight throughout.
                    configuration.probeTimeout = .seconds(120)
                    let monitor = GuestAPIMonitor(manager: fixture.manager, configuration: configuration, logger: Logger(label: "test"))
                    try await withThrowingTaskGroup { group in
                        group.addTask { await monitor.run() }
                        let slow = try await Self.start(client)
                        for _ in 0..<600 where dribbling.served == 0 { try await Task.sleep(for: .milliseconds(50)) }
                        #expect(dribbling.served > 0, "the dribbler is being probed")
                        let quick = try await Self.start(client)
                        let began = ContinuousClock.now
                        var available = false
                        while !available, ContinuousClock.now - began < .seconds(60) {
                            available = await fixture.manager.isGuestAPIAvailable(quick)
                            if !available { try await Task.sleep(for: .milliseconds(50)) }
                        }
                        print("healthy guest available \(ContinuousClock.now - began) after its start, while the other dribbles")
                        #expect(available)
                        #expect(ContinuousClock.now - began < .seconds(60))
                        #expect(await !fixture.manager.isGuestAPIAvailable(slow), "the dribbler's probe has not completed")
                        group.cancelAll()
                    }
                }
            }
        }
    }

    /// Opens and starts a session (test driver), returning its id.
    static func start(_ client: any TestClientProtocol) async throws -> SessionID {
        let (id, token) = try await client.newSession()
        let base = "/api/v1/sessions/\(id)"
        _ = try await client.call(.post, base + "/open", token: token, body: #"{"memory":128,"disk":64}"#)
        _ = try await client.settled(id, token: token)
        _ = try await client.call(.post, base + "/start", token: token)
        #expect(try await client.settled(id, token: token)["state"] as? String == "running")
        return try #require(SessionID(id))
    }
}

/// Ports handed out in order, for sessions started one after another.
final class PortQueue: Sendable {
    private let ports: Mutex<[Int]>
    init(_ ports: [Int]) { self.ports = Mutex(ports) }
    func next() -> Int { ports.withLock { $0.isEmpty ? 9 : $0.removeFirst() } }
}

/// A bare HTTP/1.1 client over a socket, for a page that goes away mid-answer (no library lets one leave
/// at a chosen byte). Its blocking calls run on a thread of their own.
enum RawClient {
    /// Sends a GET, reads until `marker` has arrived, closes the connection; returns what was read.
    static func getThenLeave(port: Int, path: String, token: String, until marker: String) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try blockingGetThenLeave(port: port, path: path, token: token, until: marker) })
            }
        }
    }

    static func blockingGetThenLeave(port: Int, path: String, token: String, until marker: String) throws -> String {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw DaemonUnreachable() }
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw DaemonUnreachable() }
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAuthorization: Bearer \(token)\r\n\r\n"
        _ = request.withCString { send(descriptor, $0, strlen($0), 0) }
        var received = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: received, as: UTF8.self).contains(marker) {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received += buffer[0..<count]
        }
        return String(decoding: received, as: UTF8.self)
    }

    struct DaemonUnreachable: Error {}
}
