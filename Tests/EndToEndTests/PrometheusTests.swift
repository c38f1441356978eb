import Foundation
import Testing
import VMSessionTestSupport

/// Debian's `prometheus`, started by the test (never as a system service), scraping the real daemon twice
/// (with the admin token on the daemon's listener, and without one on the `metricsListen` listener) while a
/// real guest goes through open, start, pause and close; the answers are read back through Prometheus's own
/// HTTP API.
extension RealGuestSuites {
@Suite("Prometheus scrapes the daemon while a real guest runs", .serialized)
struct PrometheusTests {
    /// A `prometheus` process in a temporary directory of its own, killed when the test is done.
    final class PrometheusServer: @unchecked Sendable {
        let port: Int
        private let process = Process()

        static let binary = "/usr/bin/prometheus"

        init(directory: String, scrapeConfig: String) throws {
            port = try Self.freePort()
            let config = directory + "/prometheus.yml"
            try scrapeConfig.write(toFile: config, atomically: true, encoding: .utf8)
            let log = directory + "/prometheus.log"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.executableURL = URL(fileURLWithPath: Self.binary)
            process.arguments = [
                "--config.file=\(config)", "--storage.tsdb.path=\(directory)/data", "--web.listen-address=127.0.0.1:\(port)",
                "--log.level=warn",
            ]
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }

        /// A TCP port nobody listens on now (the kernel's pick for port 0).
        static func freePort() throws -> Int {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
            }
            guard bound else { throw DaemonError("cannot find a free port") }
            return Int(UInt16(bigEndian: address.sin_port))
        }

        func waitUntilReady() async throws {
            for _ in 0..<300 {
                if let text = try? await APIClient.raw("http://127.0.0.1:\(port)/-/ready"), text.contains("Ready") { return }
                guard process.isRunning else { throw DaemonError("prometheus exited with status \(process.terminationStatus)") }
                try await Task.sleep(for: .milliseconds(100))
            }
            throw DaemonError("prometheus did not become ready within 30 s")
        }

        /// The instant vector of `query`: each result's labels and value.
        func query(_ query: String) async throws -> [(labels: [String: String], value: Double)] {
            let encoded = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
            let text = try await APIClient.raw("http://127.0.0.1:\(port)/api/v1/query?query=\(encoded)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "\(text)")
            try #require(json["status"] as? String == "success", "\(query): \(text)")
            let results = (json["data"] as? [String: Any])?["result"] as? [[String: Any]] ?? []
            return results.map { result in
                let value = (result["value"] as? [Any])?.last as? String
                return ((result["metric"] as? [String: String]) ?? [:], Double(value ?? "") ?? .nan)
            }
        }

        /// Polls `query` until its one value satisfies `expected` (Prometheus scrapes every 2 s), or fails.
        @discardableResult
        func eventually(
            _ query: String, timeout: Duration = .seconds(30), _ what: String, sourceLocation: SourceLocation = #_sourceLocation,
            _ expected: @escaping (Double) -> Bool
        ) async throws -> Double? {
            let clock = ContinuousClock()
            let deadline = clock.now + timeout
            var last: [(labels: [String: String], value: Double)] = []
            while clock.now < deadline {
                last = try await self.query(query)
                if last.count == 1, expected(last[0].value) { return last[0].value }
                try await Task.sleep(for: .milliseconds(250))
            }
            Issue.record("\(what): \(query) gave \(last.map { "\($0.labels) \($0.value)" })", sourceLocation: sourceLocation)
            return nil
        }

        func stop() {
            guard process.isRunning else { return }
            process.terminate()
            for _ in 0..<50 where process.isRunning { usleep(100_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }

        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
    }

    @Test("the series exist with the values of what was done (open, start, pause, close of a real guest) and no scrape failed")
    func prometheusSeesWhatWasDone() async throws {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "the appliance must be built first (make appliance)")
        try #require(FileManager.default.isExecutableFile(atPath: PrometheusServer.binary), "Debian's prometheus (make deps-test)")
        let directory = try TemporaryDirectory("vms-e2e-prometheus")
        let state = directory.path + "/state"
        let daemon = DaemonProcess(
            stateDirectory: state,
            arguments: ["--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "10", "--metrics-listen", "127.0.0.1:0"])
        try await daemon.start()
        let log = daemon.log()
        let listener = try #require(
            log.range(of: #"metrics served without a token on http://127\.0\.0\.1:\d+"#, options: .regularExpression).map { log[$0] },
            "the daemon says where it serves the metrics")
        let metricsPort = try #require(Int(listener.split(separator: ":").last ?? ""))
        // The scrape listener serves /metrics and nothing else; the daemon's own /metrics needs the admin token.
        #expect(try await APIClient(port: metricsPort).call(.GET, "/api/v1").status == 404)
        #expect(try await APIClient(port: daemon.port).call(.GET, "/metrics").status == 401)

        let prometheus = try PrometheusServer(
            directory: directory.path,
            scrapeConfig: """
                global:
                  scrape_interval: 2s
                  scrape_timeout: 2s
                scrape_configs:
                  - job_name: vmsessiond
                    authorization:
                      type: Bearer
                      credentials_file: \(state)/admin-token
                    static_configs:
                      - targets: ["127.0.0.1:\(daemon.port)"]
                  - job_name: vmsessiond-scrape
                    static_configs:
                      - targets: ["127.0.0.1:\(metricsPort)"]

                """)
        defer { prometheus.stop() }
        try await prometheus.waitUntilReady()
        let both = #"job=~"vmsessiond|vmsessiond-scrape""#
        try await prometheus.eventually("count(up{\(both)} == 1)", "both targets are up") { $0 == 2 }

        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("prometheus")
        let session = "/api/v1/sessions/\(id)"
        let written: [String: Int] = try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#).status == 202)
            _ = try await log.state("open")
            #expect(try await api.call(.POST, session + "/start", token: token, body: ##"{"userData":"#!/bin/sh\necho metrics\n"}"##).status == 202)
            _ = try await log.state("running")
            #expect(try await api.call(.POST, session + "/pause", token: token).status == 200)
            _ = try await log.state("paused")

            // While paused: the session's state, its cap, and libvirt's statistics of its VM.
            for job in ["vmsessiond", "vmsessiond-scrape"] {
                try await prometheus.eventually(#"vmsessiond_sessions{job="\#(job)",state="paused"}"#, "one paused session") { $0 == 1 }
            }
            try await prometheus.eventually(#"vmsessiond_sessions{job="vmsessiond",state="running"}"#, "none running") { $0 == 0 }
            try await prometheus.eventually(#"vmsessiond_session_execution_cap_ratio{job="vmsessiond",session="\#(id)"}"#, "cap") { $0 == 1 }
            let vm = #"job="vmsessiond",session="\#(id)""#
            try await prometheus.eventually("vmsessiond_libvirt_stats_up{job=\"vmsessiond\"}", "libvirt answered") { $0 == 1 }
            try await prometheus.eventually("vmsessiond_domain_cpu_time_seconds_total{\(vm)}", "the guest used CPU") { $0 > 0 }
            try await prometheus.eventually("vmsessiond_domain_virtual_cpus{\(vm)}", "one vCPU") { $0 == 1 }
            try await prometheus.eventually("vmsessiond_domain_memory_maximum_bytes{\(vm)}", "256 MiB") { $0 == 256 * 1024 * 1024 }
            try await prometheus.eventually("vmsessiond_domain_memory_rss_bytes{\(vm)}", "qemu's resident memory") { $0 > 0 }
            try await prometheus.eventually("sum(vmsessiond_domain_block_capacity_bytes{\(vm)})", "the 64 MiB disk is there") {
                $0 >= 64 * 1024 * 1024
            }
            // The appliance runs from its initramfs and reads no disk, so its disk counters exist at zero or more.
            try await prometheus.eventually("count(vmsessiond_domain_block_read_bytes_total{\(vm)} >= 0)", "disk counters") { $0 >= 1 }
            // The guest's card is given to QEMU outside libvirt (passt's `-netdev stream`), so libvirt reports no
            // interface for it: no network series, rather than made-up ones.
            #expect(try await prometheus.query("vmsessiond_domain_interface_receive_bytes_total{\(vm)}").isEmpty)
            return Dictionary(grouping: await log.events, by: \.type).mapValues(\.count)
        }
        #expect(try await api.call(.POST, session + "/close", token: token).status == 202)
        try await prometheus.eventually(#"vmsessiond_sessions{job="vmsessiond",state="closed"}"#, "the session is closed") { $0 == 1 }

        // The counters: what was done, once each, on both listeners.
        for job in ["vmsessiond", "vmsessiond-scrape"] {
            for action in ["open", "start", "pause", "close"] {
                try await prometheus.eventually(
                    #"vmsessiond_operations_total{job="\#(job)",action="\#(action)",outcome="succeeded"}"#, "\(action) counted once") { $0 == 1 }
            }
            try await prometheus.eventually(#"sum(vmsessiond_operations_total{job="\#(job)"})"#, "four operations in all") { $0 == 4 }
            try await prometheus.eventually(
                #"vmsessiond_operation_duration_seconds_count{job="\#(job)",action="start",outcome="succeeded"}"#, "the start was timed") { $0 == 1 }
            try await prometheus.eventually(#"vmsessiond_secret_checks_total{job="\#(job)",outcome="created"}"#, "one new secret") { $0 == 1 }
        }
        // Events written: at least those the session's stream showed, by type (the close's came after it ended).
        for (type, count) in written where type != "debug" {
            try await prometheus.eventually(#"vmsessiond_events_written_total{job="vmsessiond",type="\#(type)"}"#, "\(type) events") {
                $0 >= Double(count)
            }
        }
        try await prometheus.eventually(#"vmsessiond_events_delivered_total{job="vmsessiond"}"#, "events reached the stream") { $0 > 0 }
        // Hummingbird's middleware: the one pause request, by route, method and status.
        try await prometheus.eventually(
            #"sum(vmsessiond_http_requests_total{job="vmsessiond",http_request_method="POST",http_route=~".*/pause",http_response_status_code="200"})"#,
            "the pause request") { $0 == 1 }
        // The VM's own series went with it.
        try await prometheus.eventually(#"count(vmsessiond_domain_cpu_time_seconds_total{session="\#(id)"}) or vector(0)"#, "no VM left") { $0 == 0 }
        // No scrape of either target ever failed.
        try await prometheus.eventually("min(min_over_time(up{\(both)}[10m]))", "every scrape succeeded") { $0 == 1 }
        try await prometheus.eventually("count(count_over_time(up{\(both)}[10m]) > 5)", "both targets were scraped all along") { $0 == 2 }
        prometheus.stop()
        try await daemon.stop()
    }
}
}
