import Foundation
import Synchronization
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
import VMSessionAPI
import VMSessionCore
import VMSessionDaemon
import VMSessionHypervisor
import VMSessionIdle
import VMSessionMetrics
import VMSessionStore
import VMSessionTestSupport

/// The daemon's real router over the real session manager, with libvirt's test driver and an in-memory
/// database; the appliance files are stand-ins, since the test driver boots nothing.
struct APIFixture {
    let manager: SessionManager
    let store: SessionStore
    /// The hub the daemon's events go through (tests record events into it directly).
    let events: EventHub
    let directory: String
    let images: ImageStore
    /// The admin token, as `vmsessionctl` reads it from the state directory.
    let adminToken: String
    /// Every route the router serves, as `METHOD /path/{parameter}`.
    let routes: [String]
    let controller: IdleController
    /// The libvirt hosts (the local one; tests add more). No monitor runs unless a test runs one.
    let hosts: HostRegistry
    /// The routers served on real loopback sockets, with the read fast path and without (run by the tests that need them).
    let live: LiveServers

    /// `source` is the idle source the controller reads (nil: no display, as on a headless host).
    /// `apiPort` is the loopback port of the stand-in server that plays every started guest's API (the proxy's tests);
    /// `guestProxy` is the proxy's policy; `testing` `.live` serves on a real loopback port (the client's `port`);
    /// `clock` is the session manager's (a ``ManualClock`` for what depends on time passing, such as the secret throttle).
    static func run(
        source: (any IdleSource)? = nil, apiPort: (@Sendable () -> Int)? = nil, guestProxy: GuestProxyPolicy = .defaults,
        testing: TestingSetup = .router, hypervisor scripted: (any Hypervisor)? = nil, quota: SessionQuota = .defaults,
        clock: any Clock<Duration> = ContinuousClock(), _ body: @Sendable (any TestClientProtocol, APIFixture) async throws -> Void
    ) async throws {
        let scratch = try TemporaryDirectory("vms-api")
        let directory = scratch.path
        try scratch.standInAppliance()
        let logger = Logger(label: "test")
        let store = try SessionStore.inMemory()
        let assigned = PortAssignments()
        let hypervisor = try LibvirtHypervisor(
            configuration: .init(
                uri: "test:///default", stateDirectory: directory, accelerator: .tcg,
                standInGuestAPIPort: { id in
                    // Each session keeps the port it was first given (the hypervisor is asked at every probe).
                    guard let apiPort else { return nil }
                    return assigned.port(for: id, picking: apiPort)
                }),
            logger: logger)
        // A scripted hypervisor, where a test needs what libvirt's test driver cannot do (snapshots with memory).
        let chosen: any Hypervisor = scripted ?? hypervisor
        let metrics = DaemonMetrics()
        let events = EventHub(store: store, metrics: metrics)
        var hasher = SecretHasher()
        hasher.rounds = 1 << 10  // keep the tests quick; the production cost is tested in SecretHasherTests
        let adminToken = try AdminToken.load(stateDirectory: directory)
        // Downloads retry quickly here; the production backoff starts at half a second.
        let images = ImageStore(
            store: store, catalog: ImageCatalog(applianceDirectory: directory + "/appliance"), directory: directory + "/images",
            downloader: ImageDownloader(retry: .init(attempts: 3, firstDelay: .milliseconds(20)), logger: logger), logger: logger)
        let manager = SessionManager(
            store: store, events: events, hypervisor: chosen, images: images,
            configuration: .init(stopGrace: .seconds(1), quota: quota),
            hasher: hasher, adminToken: adminToken, clock: clock, metrics: metrics, logger: logger)
        try await manager.reconcile()
        let controller = try IdleController(
            manager: manager, events: events, store: store, source: source, noSourceReason: "no display in tests",
            idleTime: 30, logger: logger)
        let origins = try OriginRegistry(store: store, logger: logger)
        let hosts = try HostRegistry(
            store: store, localURI: chosen.description.uri, configured: [],
            sessionCount: { name in
                name == HostDefinition.localName ? manager.readModel.allSessions().sessions.filter { $0.state != .closed }.count : 0
            }, guestNetwork: { name in name == HostDefinition.localName ? chosen.guestNetworkOffer : nil }, logger: logger)
        let routers = VMSessionAPI.buildRouters(
            manager: manager, events: events, origins: origins, hypervisor: chosen.description, controller: controller,
            guestProxy: guestProxy,
            metrics: MetricsCollector(
                metrics: metrics, manager: manager, hypervisor: chosen, controller: controller, consoles: nil, hosts: hosts, store: store),
            hosts: hosts)
        let router = routers.http
        let app = Application(router: router, logger: logger)
        let admin = try String(contentsOfFile: adminToken.path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let fixture = APIFixture(
            manager: manager, store: store, events: events, directory: directory, images: images, adminToken: admin,
            routes: router.routes.map(\.description), controller: controller, hosts: hosts, live: LiveServers(routers: routers))
        try await withThrowingTaskGroup { group in
            group.addTask { try await manager.run() }
            group.addTask { try await images.run() }
            group.addTask { try await controller.run() }
            try await app.test(testing) { client in try await body(client, fixture) }
            group.cancelAll()
        }
    }
}

/// A decoded JSON response.
struct Reply {
    let status: HTTPResponse.Status
    let json: [String: Any]
    let headers: HTTPFields

    subscript(key: String) -> Any? { json[key] }
    var error: [String: Any]? { json["error"] as? [String: Any] }
    var errorCode: String? { error?["code"] as? String }
}

extension TestClientProtocol {
    func call(
        _ method: HTTPRequest.Method, _ path: String, token: String? = nil, body: String? = nil, origin: String? = nil,
        extraHeaders: HTTPFields = [:]
    ) async throws -> Reply {
        var headers = extraHeaders
        if let token { headers[.authorization] = "Bearer \(token)" }
        if let origin { headers[.origin] = origin }
        return try await execute(uri: path, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) { response in
            let data = Data(response.body.readableBytesView)
            let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
            return Reply(status: response.status, json: json, headers: response.headers)
        }
    }

    /// Creates a session and returns its id and token.
    func newSession(_ name: String = "demo-\(UUID().uuidString.prefix(8))", secret: String = "s3cret") async throws -> (id: String, token: String) {
        let reply = try await call(.post, "/api/v1/sessions", body: #"{"name":"\#(name)","secret":"\#(secret)"}"#)
        let session = try #require(reply["session"] as? [String: Any])
        return (try #require(session["id"] as? String), try #require(reply["token"] as? String))
    }

    /// Polls the session until it leaves its transient state, and returns it.
    func settled(_ id: String, token: String) async throws -> [String: Any] {
        for _ in 0..<200 {
            let reply = try await call(.get, "/api/v1/sessions/\(id)", token: token)
            let state = reply["state"] as? String ?? ""
            if let parsed = SessionState(rawValue: state), !parsed.isTransient { return reply.json }
            try await Task.sleep(for: .milliseconds(25))
        }
        Issue.record("session \(id) did not settle")
        return [:]
    }
}

/// The stand-in port each session of an ``APIFixture`` was given, so that it keeps it.
final class PortAssignments: Sendable {
    private let ports = Mutex<[SessionID: Int]>([:])

    /// The session's port, picked (outside the lock) the first time it is asked for.
    func port(for id: SessionID, picking pick: () -> Int) -> Int {
        if let port = ports.withLock({ $0[id] }) { return port }
        let picked = pick()
        return ports.withLock { ports in
            if let port = ports[id] { return port }
            ports[id] = picked
            return picked
        }
    }
}
