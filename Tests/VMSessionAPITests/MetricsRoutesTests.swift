import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Metrics
import NIOCore
import Testing
import VMSessionCore
import VMSessionDaemon
import VMSessionMetrics
@testable import VMSessionAPI

/// One scrape of `GET /metrics`, parsed: every sample line as name, labels and value, and the `# TYPE` lines.
struct Scrape {
    struct Sample {
        let name: String
        let labels: [String: String]
        let value: Double
    }

    let samples: [Sample]
    let types: [String: String]
    let text: String

    init(_ text: String) {
        self.text = text
        var samples: [Sample] = []
        var types: [String: String] = [:]
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                if parts.count == 4 { types[String(parts[2])] = String(parts[3]) }
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            var labels: [String: String] = [:]
            var name = String(series)
            if let brace = series.firstIndex(of: "{") {
                name = String(series[..<brace])
                let body = series[series.index(after: brace)..<(series.lastIndex(of: "}") ?? series.endIndex)]
                // Label values here never hold `",`; the daemon's are ids, names of states and numbers.
                for pair in body.components(separatedBy: "\",") where !pair.isEmpty {
                    guard let equals = pair.firstIndex(of: "=") else { continue }
                    var value = String(pair[pair.index(after: equals)...])
                    if value.hasPrefix("\"") { value.removeFirst() }
                    if value.hasSuffix("\"") { value.removeLast() }
                    labels[String(pair[..<equals])] = value
                }
            }
            samples.append(Sample(name: name, labels: labels, value: value))
        }
        self.samples = samples
        self.types = types
    }

    /// The value of the one series of `name` whose labels include `labels`; nil if there is none.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matching = samples.filter { sample in sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value } }
        return matching.isEmpty ? nil : matching.reduce(0) { $0 + $1.value }
    }
}

extension TestClientProtocol {
    func scrape(_ token: String) async throws -> Scrape {
        try await execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer \(token)"]) { response in
            #expect(response.status == .ok)
            #expect(response.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
            return Scrape(String(buffer: response.body))
        }
    }
}

@Suite("GET /metrics")
struct MetricsRoutesTests {
    @Test("/metrics needs the admin token: none is 401, a session's token 403, each with the JSON error")
    func adminOnly() async throws {
        try await APIFixture.run { client, fixture in
            let (_, token) = try await client.newSession()
            let anonymous = try await client.call(.get, "/metrics")
            #expect(anonymous.status == .unauthorized)
            #expect(anonymous.errorCode == "unauthorized")
            let session = try await client.call(.get, "/metrics", token: token)
            #expect(session.status == .forbidden)
            #expect(session.errorCode == "not_allowed")
            let post = try await client.call(.post, "/metrics", token: fixture.adminToken)
            #expect(post.status == .methodNotAllowed)
            let scrape = try await client.scrape(fixture.adminToken)
            #expect(scrape.types["vmsessiond_sessions"] == "gauge")
        }
    }

    @Test("operations are counted by action and outcome and timed; sessions by state and caps mirror the manager; events written match the store")
    func operationsSessionsAndEvents() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            let base = "/api/v1/sessions/\(id)"
            #expect(try await client.call(.post, base + "/open", token: token, body: #"{"memory":128,"disk":64}"#).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "open")
            #expect(try await client.call(.put, base + "/execution-cap", token: token, body: #"{"cap":40}"#).status == .ok)
            #expect(try await client.call(.post, base + "/start", token: token).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "running")
            #expect(try await client.call(.post, base + "/pause", token: token).status == .ok)
            #expect(try await client.call(.post, base + "/resume", token: token).status == .ok)
            #expect(try await client.call(.post, base + "/pause", token: token).status == .ok)
            // Refused by the state machine: no operation, nothing counted.
            #expect(try await client.call(.post, base + "/pause", token: token).status == .conflict)
            let (other, otherToken) = try await client.newSession()
            #expect(try await client.call(.post, "/api/v1/sessions/\(other)/open", token: otherToken, body: #"{"memory":128,"disk":64}"#).status == .accepted)
            #expect(try await client.settled(other, token: otherToken)["state"] as? String == "open")

            let scrape = try await client.scrape(fixture.adminToken)
            let done = ["outcome": "succeeded"]
            #expect(scrape.value("vmsessiond_operations_total", done.merging(["action": "open"]) { $1 }) == 2)
            #expect(scrape.value("vmsessiond_operations_total", done.merging(["action": "start"]) { $1 }) == 1)
            #expect(scrape.value("vmsessiond_operations_total", done.merging(["action": "pause"]) { $1 }) == 2)
            #expect(scrape.value("vmsessiond_operations_total", done.merging(["action": "resume"]) { $1 }) == 1)
            #expect(scrape.value("vmsessiond_operations_total", ["outcome": "failed"]) == nil)
            #expect(scrape.value("vmsessiond_operation_duration_seconds_count", ["action": "pause", "outcome": "succeeded"]) == 2)
            #expect(scrape.value("vmsessiond_operation_duration_seconds_bucket", ["action": "open", "le": "+Inf"]) == 2)
            #expect(scrape.types["vmsessiond_operation_duration_seconds"] == "histogram")

            #expect(scrape.value("vmsessiond_sessions", ["state": "paused"]) == 1)
            #expect(scrape.value("vmsessiond_sessions", ["state": "open"]) == 1)
            #expect(scrape.value("vmsessiond_sessions", ["state": "running"]) == 0)
            #expect(scrape.value("vmsessiond_session_execution_cap_ratio", ["session": id]) == 0.4)
            #expect(scrape.value("vmsessiond_session_execution_cap_ratio", ["session": other]) == 1)

            // Every event the store holds was counted once, by type.
            let stored = try fixture.store.events(for: SessionID(id), after: 0, limit: 10_000)
                + fixture.store.events(for: SessionID(other), after: 0, limit: 10_000)
            let byType = Dictionary(grouping: stored, by: \.kind.rawValue).mapValues(\.count)
            #expect(!byType.isEmpty)
            for (type, count) in byType {
                #expect(scrape.value("vmsessiond_events_written_total", ["type": type]) == Double(count), "\(type)")
            }
            #expect(scrape.value("vmsessiond_events_written_total") == Double(stored.count))

            // Closing and deleting takes the session's cap series away.
            #expect(try await client.call(.post, "/api/v1/sessions/\(other)/close", token: otherToken).status == .accepted)
            #expect(try await client.settled(other, token: otherToken)["state"] as? String == "closed")
            #expect(try await client.call(.delete, "/api/v1/sessions/\(other)", token: otherToken).status == .noContent)
            let after = try await client.scrape(fixture.adminToken)
            #expect(after.value("vmsessiond_session_execution_cap_ratio", ["session": other]) == nil)
            #expect(after.value("vmsessiond_operations_total", ["action": "close", "outcome": "succeeded"]) == 1)
            #expect(after.value("vmsessiond_sessions", ["state": "closed"]) == 0)
        }
    }

    @Test("secret checks are counted as created, matched and wrong, and every too_many_attempts refusal as a throttle")
    func secretChecksAndThrottles() async throws {
        try await APIFixture.run { client, fixture in
            let body = { (secret: String) in #"{"name":"guarded","secret":"\#(secret)"}"# }
            #expect(try await client.call(.post, "/api/v1/sessions", body: body("right")).status == .created)
            #expect(try await client.call(.post, "/api/v1/sessions", body: body("right")).status == .ok)
            var wrong = 0
            var throttled = 0
            for _ in 0..<12 {
                let reply = try await client.call(.post, "/api/v1/sessions", body: body("wrong"))
                switch reply.errorCode {
                case "password_denied": wrong += 1
                case "too_many_attempts": throttled += 1
                default: Issue.record("unexpected answer \(reply.status) \(reply.json)")
                }
            }
            #expect(throttled > 0, "the throttle refuses a run of wrong secrets")
            let scrape = try await client.scrape(fixture.adminToken)
            #expect(scrape.value("vmsessiond_secret_checks_total", ["outcome": "created"]) == 1)
            #expect(scrape.value("vmsessiond_secret_checks_total", ["outcome": "matched"]) == 1)
            #expect(scrape.value("vmsessiond_secret_checks_total", ["outcome": "wrong"]) == Double(wrong))
            #expect(scrape.value("vmsessiond_secret_throttled_total") == Double(throttled))
        }
    }

    @Test("the origin guard's decisions and the admin's are counted as they were made")
    func originDecisions() async throws {
        try await APIFixture.run { client, fixture in
            let page = "http://localhost:8123"
            let admin = fixture.adminToken
            #expect(try await client.call(.get, "/api/v1", origin: page).errorCode == "origin_not_approved")  // pending
            #expect(try await client.call(.get, "/api/v1", origin: page).errorCode == "origin_not_approved")  // pending
            #expect(try await client.call(.get, "/api/v1", origin: "not an origin").errorCode == "origin_not_approved")  // invalid
            #expect(try await client.call(.get, "/vmsession.js", origin: page).status == .ok)  // public
            #expect(try await client.call(.get, "/api/v1", origin: "http://localhost").status == .ok)  // same origin
            #expect(try await client.call(.post, "/api/v1/origins/approve", token: admin, body: #"{"origin":"\#(page)"}"#).status == .ok)
            #expect(try await client.call(.get, "/api/v1", origin: page).status == .ok)  // approved
            #expect(try await client.call(.post, "/api/v1/origins/deny", token: admin, body: #"{"origin":"\#(page)"}"#).status == .ok)
            #expect(try await client.call(.get, "/api/v1", origin: page).errorCode == "origin_not_approved")  // denied
            #expect(try await client.call(.post, "/api/v1/origins/forget", token: admin, body: #"{"origin":"\#(page)"}"#).status == .noContent)
            let scrape = try await client.scrape(admin)
            let checks = "vmsessiond_origin_checks_total"
            #expect(scrape.value(checks, ["decision": "pending"]) == 2)
            #expect(scrape.value(checks, ["decision": "invalid"]) == 1)
            #expect(scrape.value(checks, ["decision": "public"]) == 1)
            #expect(scrape.value(checks, ["decision": "same_origin"]) == 1)
            #expect(scrape.value(checks, ["decision": "approved"]) == 1)
            #expect(scrape.value(checks, ["decision": "denied"]) == 1)
            #expect(scrape.value(checks) == 7)
            for decision in ["approved", "denied", "forgotten"] {
                #expect(scrape.value("vmsessiond_origin_decisions_total", ["decision": decision]) == 1, "\(decision)")
            }
        }
    }

    @Test("proxied guest-API requests are counted by the status their caller got, the guest's or the daemon's refusal")
    func guestAPIRequests() async throws {
        try await StandInGuest.run { guest, port in
            try await APIFixture.run(apiPort: { port }) { client, fixture in
                let (idle, idleToken) = try await client.newSession()
                #expect(try await client.call(.get, "/api/v1/sessions/\(idle)/guest/hello", token: idleToken).status == .conflict)
                #expect(try await client.call(.get, "/api/v1/sessions/\(idle)/guest/hello").status == .unauthorized)
                let (id, token) = try await GuestProxyRoutesTests.runningSession(client, fixture)
                for _ in 0..<3 {
                    #expect(try await client.call(.get, "/api/v1/sessions/\(id)/guest/hello", token: token).status == .ok)
                }
                let scrape = try await client.scrape(fixture.adminToken)
                #expect(scrape.value("vmsessiond_guest_api_requests_total", ["code": "200"]) == 3)
                #expect(scrape.value("vmsessiond_guest_api_requests_total", ["code": "409"]) == 1)
                #expect(scrape.value("vmsessiond_guest_api_requests_total", ["code": "401"]) == 1)
                #expect(scrape.value("vmsessiond_guest_api_requests_total") == 5)
                #expect(guest.served == 3)
            }
        }
    }

    @Test("the idle state, the stream and viewer gauges and libvirt's statistics are read from their owners at scrape time")
    func scrapeTimeGauges() async throws {
        try await APIFixture.run { client, fixture in
            let (id, token) = try await client.newSession()
            #expect(try await client.call(.post, "/api/v1/sessions/\(id)/open", token: token, body: #"{"memory":128,"disk":64}"#).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "open")
            #expect(try await client.call(.post, "/api/v1/sessions/\(id)/start", token: token).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "running")
            let scrape = try await client.scrape(fixture.adminToken)
            // The controller decided long before (its first look at the desktop); nothing changes it here.
            let status = await fixture.controller.status()
            #expect(scrape.value("vmsessiond_desktop_idle") == (status.isSystemIdle ? 1 : 0))
            #expect(scrape.value("vmsessiond_idle_threshold_seconds") == Double(status.idleTime))
            #expect(scrape.value("vmsessiond_event_stream_clients") == 0)
            #expect(scrape.value("vmsessiond_display_clients") == 0)
            // libvirt's test driver answers the bulk call, with little in it: whatever it reports is shown.
            #expect(scrape.value("vmsessiond_libvirt_stats_up") == 1)
            print("test driver's statistics:", scrape.samples.filter { $0.name.hasPrefix("vmsessiond_domain_") }.map { "\($0.name)=\($0.value)" })
        }
    }

    @Test("the scrape listener takes IP addresses and localhost in Host, never a DNS name (rebinding)")
    func scrapeListenerHosts() {
        for host in ["127.0.0.1:9711", "10.1.2.3:9711", "192.168.0.7", "[::1]:9711", "[fd00::5]:9711", "localhost:9711"] {
            #expect(ScrapeHostGuard<BasicRequestContext>.isAddress(authority: host), "\(host)")
        }
        for host in ["evil.example:9711", "127.0.0.1.nip.io:9711", "1.2.3:9711", "[::1]x", "10.0.0.1:port", ""] {
            #expect(!ScrapeHostGuard<BasicRequestContext>.isAddress(authority: host), "\(host)")
        }
    }

    @Test("HTTP requests are counted and timed whether the answer has a known length (kept) or streams (counted once written)")
    func httpRequestsCountedForEveryBodyKind() async throws {
        let metrics = DaemonMetrics()
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        try await withMetricsFactory(metrics.factory) {
            let router = Router()
            router.add(middleware: HTTPMetrics())
            router.get("/known") { _, _ in Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "{}"))) }
            router.get("/streamed") { _, _ in Response(status: .ok, body: .init(asyncSequence: stream)) }
            try await Application(router: router).test(.live) { client in
                try await client.execute(uri: "/known", method: .get) { response in
                    #expect(response.status == .ok)
                    // The length stays known: one buffer, not a chunked closure body.
                    #expect(response.headers[.contentLength] == "2")
                    #expect(response.headers[.transferEncoding] == nil)
                }
                let scrape = Scrape(String(decoding: metrics.exposition(MetricsSnapshot()), as: UTF8.self))
                #expect(scrape.value("vmsessiond_http_requests_total", ["http_route": "/known", "http_response_status_code": "200"]) == 1)
                #expect(scrape.value("vmsessiond_http_request_duration_seconds_count", ["http_route": "/known"]) == 1)
                #expect(scrape.value("vmsessiond_http_active_requests", ["http_request_method": "GET"]) == 0)
                continuation.yield(ByteBuffer(string: "part"))
                continuation.finish()
                try await client.execute(uri: "/streamed", method: .get) { response in
                    #expect(String(buffer: response.body) == "part")
                    #expect(response.headers[.contentLength] == nil)
                }
            }
        }
        let scrape = Scrape(String(decoding: metrics.exposition(MetricsSnapshot()), as: UTF8.self))
        #expect(scrape.value("vmsessiond_http_requests_total", ["http_route": "/streamed", "http_response_status_code": "200"]) == 1)
        #expect(scrape.value("vmsessiond_http_request_duration_seconds_count", ["http_route": "/streamed"]) == 1)
        #expect(scrape.value("vmsessiond_http_active_requests", ["http_request_method": "GET"]) == 0)
    }

    @Test("every family has one type, one help text and one label set, and none collides with what the HTTP middleware registers")
    func noFamilyCollides() async throws {
        // Declared names: unique, conventional, and apart from the HTTP ones.
        let names = MetricFamily.all.map(\.name)
        #expect(Set(names).count == names.count)
        #expect(Set(names).isDisjoint(with: HTTPMetricNames.renamed.values))
        for family in MetricFamily.all {
            #expect(family.name.hasPrefix("vmsessiond_"))
            #expect(family.kind == .counter ? family.name.hasSuffix("_total") : !family.name.hasSuffix("_total"), "\(family.name)")
            #expect(family.name.allSatisfy { $0.isLowercase || $0 == "_" }, "\(family.name): swift-prometheus rewrites other characters")
        }
        // The real thing: every family and the middleware's metrics in one registry, scraped. A collision
        // would trap here (swift-prometheus's fatalError) and fail the run.
        let metrics = DaemonMetrics()
        var snapshot = MetricsSnapshot()
        snapshot.executionCaps = [SessionID(): .unlimited]
        snapshot.desktopIdle = true
        snapshot.idleThresholdSeconds = 30
        (snapshot.eventStreamClients, snapshot.consoleClients, snapshot.displayClients, snapshot.machineStatsAnswered) = (1, 1, 1, true)
        snapshot.hosts = ["lab1": (true, 0.001)]
        snapshot.storeWriterCheckpoints = 0
        var stats = MachineStats(
            libvirtFields: [
                "cpu.time": 1, "cpu.user": 1, "cpu.system": 1, "vcpu.current": 1, "balloon.maximum": 1, "balloon.current": 1,
                "balloon.rss": 1, "balloon.usable": 1, "balloon.available": 1, "block.count": 1, "net.count": 1,
            ], names: ["block.0.name": "vda", "net.0.name": "tap0"])
        stats.disks[0] = .init(device: "vda")
        for path in [\MachineStats.Disk.readBytes, \.writeBytes, \.readRequests, \.writeRequests, \.readSeconds, \.writeSeconds,
            \.flushRequests, \.capacityBytes, \.allocationBytes, \.physicalBytes] { stats.disks[0][keyPath: path] = 1 }
        for path in [\MachineStats.Interface.receiveBytes, \.receivePackets, \.receiveErrors, \.receiveDrops, \.transmitBytes,
            \.transmitPackets, \.transmitErrors, \.transmitDrops] { stats.interfaces[0][keyPath: path] = 1 }
        snapshot.machines = [SessionID(): stats]
        metrics.operationEnded(.start, .succeeded, after: .seconds(1))
        metrics.eventsWritten([SessionEvent(id: 1, sessionID: SessionID(), kind: .progress, payload: "{}", time: Date())])
        metrics.eventsDelivered(1)
        metrics.subscribersDropped(1)
        metrics.secretChecked(.matched)
        metrics.secretThrottled()
        metrics.originChecked(.approved)
        metrics.originDecided(.approved)
        metrics.guestAPIRequest(status: 200)
        metrics.storeCheckpointed(.succeeded, after: .milliseconds(3))
        // The daemon's HTTP middleware, recording through this registry (task-local, so no other test sees it).
        try await withMetricsFactory(metrics.factory) {
            let router = Router()
            router.add(middleware: HTTPMetrics())
            router.get("/hello") { _, _ in "hello" }
            router.get("/fails") { _, _ -> String in throw HTTPError(.badRequest) }
            try await Application(router: router).test(.router) { client in
                try await client.execute(uri: "/hello", method: .get) { #expect($0.status == .ok) }
                try await client.execute(uri: "/fails", method: .get) { #expect($0.status == .badRequest) }
                try await client.execute(uri: "/nowhere", method: .get) { #expect($0.status == .notFound) }
            }
        }
        let scrape = Scrape(String(decoding: metrics.exposition(snapshot), as: UTF8.self))
        // Every declared family was written, with its type and label names, and only those.
        for family in MetricFamily.all {
            #expect(scrape.types[family.name] == family.kind.rawValue, "\(family.name)")
            let series = family.kind == .histogram ? family.name + "_count" : family.name
            let sets = Set(scrape.samples.filter { $0.name == series }.map { Set($0.labels.keys) })
            #expect(sets == [Set(family.labels)], "\(family.name): \(sets)")
        }
        // The middleware's, renamed, each with one label set.
        #expect(scrape.value("vmsessiond_http_requests_total", ["http_route": "/hello", "http_response_status_code": "200"]) == 1)
        #expect(scrape.value("vmsessiond_http_request_duration_seconds_count", ["http_route": "/hello"]) == 1)
        #expect(scrape.types["vmsessiond_http_request_duration_seconds"] == "histogram")
        #expect(scrape.types["vmsessiond_http_active_requests"] == "gauge")
        for name in HTTPMetricNames.renamed.values where name != "vmsessiond_http_request_errors_total" {
            let series = scrape.types[name] == "histogram" ? name + "_count" : name
            let sets = Set(scrape.samples.filter { $0.name == series }.map { Set($0.labels.keys) })
            #expect(sets.count == 1, "\(name): \(sets)")
        }
        // No name was written under two types.
        let typeLines = scrape.text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }
        #expect(Set(typeLines.map { $0.split(separator: " ")[2] }).count == typeLines.count)
    }
}
