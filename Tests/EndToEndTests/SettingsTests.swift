import Foundation
import Testing
import VMSessionTestSupport

/// The daemon's settings as a user sets them: through the variables the README names. A setting out of
/// its range stops the daemon at start with a message that names the setting, before anything is touched.
@Suite("Settings (daemon process, test driver)")
struct SettingsTests {
    /// Starts the daemon with `variables` and returns its exit status and output; it is expected to refuse.
    static func refusedStart(_ variables: [String]) async throws -> (status: Int32, output: String) {
        let directory = try TemporaryDirectory("vms-e2e-settings")
        let result = try await Command.run(
            "/usr/bin/env",
            variables + [DaemonProcess.binary, "--libvirt-uri", "test:///default", "--listen", "127.0.0.1:0", "--state-dir", directory.path + "/state"])
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/state/vmsessiond.sqlite"), "nothing was made")
        return result
    }

    @Test("each console setting is read from the variable the README names, and one out of range is refused by name")
    func consoleVariables() async throws {
        let readme = try String(contentsOfFile: DaemonProcess.packageRoot + "/README.md", encoding: .utf8)
        for variable in ["VMSESSIOND_CONSOLE_HISTORY_BYTES", "VMSESSIOND_CONSOLE_VIEWER_BUFFER_BYTES", "VMSESSIOND_CONSOLE_LOG_BYTES"] {
            #expect(readme.contains(variable), "the README names \(variable)")
        }
        for (variable, key) in [
            ("VMSESSIOND_CONSOLE_HISTORY_BYTES", "console.historyBytes"), ("VMSESSIOND_CONSOLE_VIEWER_BUFFER_BYTES", "console.viewerBufferBytes"),
            ("VMSESSIOND_CONSOLE_VIEWERS", "console.viewers"), ("VMSESSIOND_CONSOLE_LOG_BYTES", "console.logBytes"),
        ] {
            let (status, output) = try await Self.refusedStart(["\(variable)=0"])
            #expect(status != 0, "\(variable)=0 is refused")
            #expect(output.contains("\(key) must be a whole number"), "the refusal names \(key): \(output.prefix(300))")
        }
    }

    @Test("a console log bound smaller than the console's history is refused, saying what to change")
    func logBoundBelowHistory() async throws {
        let (status, output) = try await Self.refusedStart(["VMSESSIOND_CONSOLE_HISTORY_BYTES=200000", "VMSESSIOND_CONSOLE_LOG_BYTES=100000"])
        #expect(status != 0)
        #expect(output.contains("console.logBytes (100000) must be at least console.historyBytes (200000)"), "\(output.prefix(300))")
    }

    @Test("metricsListen is read from its variable and the config file: a bad value is refused by name, a good one serves /metrics alone without a token")
    func metricsListen() async throws {
        let (status, output) = try await Self.refusedStart(["VMSESSIOND_METRICS_LISTEN=nonsense"])
        #expect(status != 0)
        #expect(output.contains("metricsListen must be ADDRESS:PORT"), "\(output.prefix(300))")

        let directory = try TemporaryDirectory("vms-e2e-metrics-listen")
        let config = directory.path + "/config.json"
        try #"{"metricsListen": "127.0.0.1:0"}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let daemon = DaemonProcess(
            stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default", "--config", config])
        try await daemon.start()
        let log = daemon.log()
        let served = try #require(
            log.range(of: #"metrics served without a token on http://127\.0\.0\.1:\d+"#, options: .regularExpression).map { log[$0] })
        let scrape = APIClient(port: try #require(Int(served.split(separator: ":").last ?? "")))
        let text = try await APIClient.raw(scrape.base + "/metrics")
        #expect(text.contains("# TYPE vmsessiond_sessions gauge"))
        #expect(try await scrape.call(.GET, "/metrics", headers: [("Host", "evil.example")]).errorCode == "forbidden_host")
        #expect(try await scrape.call(.GET, "/api/v1/sessions").status == 404)
        try await daemon.stop()
    }

    @Test("hosts are read from the config file and the variable, the flag wins over both, and a bad one is refused by name before anything is made")
    func hosts() async throws {
        let (status, output) = try await Self.refusedStart(["VMSESSIOND_HOSTS=lab1 xen:///system"])
        #expect(status != 0)
        #expect(output.contains("hosts: 'uri' must be a qemu+ssh://"), "\(output.prefix(300))")

        let directory = try TemporaryDirectory("vms-e2e-hosts-settings")
        let config = directory.path + "/config.json"
        try #"{"hosts": ["fromfile test:///default room=a maxSessions=2"]}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let fromFile = DaemonProcess(
            stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default", "--config", config],
            environment: ["VMSESSIOND_HOSTS": "fromenv test:///default,other test:///default"])
        try await fromFile.start()
        let client = APIClient(port: fromFile.port).typed(token: try fromFile.adminToken())
        #expect(try await client.hosts().map(\.name) == ["fromenv", "local", "other"], "the variable wins over the file")
        try await fromFile.stop()

        let flagged = DaemonProcess(
            stateDirectory: directory.path + "/state",
            arguments: ["--libvirt-uri", "test:///default", "--config", config, "--host", "fromflag test:///default gpu=none"],
            environment: ["VMSESSIOND_HOSTS": "fromenv test:///default"])
        try await flagged.start()
        let hosts = try await APIClient(port: flagged.port).typed(token: try flagged.adminToken()).hosts()
        #expect(hosts.map(\.name) == ["fromflag", "local"], "the flag wins, and the hosts the config no longer names went")
        #expect(hosts.first?.labels == ["gpu": "none"] && hosts.first?.source == "config")
        try await flagged.stop()

        let onlyFile = DaemonProcess(stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default", "--config", config])
        try await onlyFile.start()
        let fileHosts = try await APIClient(port: onlyFile.port).typed(token: try onlyFile.adminToken()).hosts()
        #expect(fileHosts.map(\.name) == ["fromfile", "local"])
        #expect(fileHosts.first?.maxSessions == 2 && fileHosts.first?.labels == ["room": "a"])
        try await onlyFile.stop()
    }
}
