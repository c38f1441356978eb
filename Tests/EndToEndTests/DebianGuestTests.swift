import Foundation
import Testing

/// A real distribution contextualized by real cloud-init: the Debian 12 guest (`make debian-guest`,
/// Contextualization/debian) registered as an image, booted under TCG through the daemon, with the NoCloud
/// seed the daemon writes. Its boots take minutes under TCG, so it runs in `make test-debian` (which sets
/// VMSESSIOND_TEST_DEBIAN to the built image's directory), not in `make test`.
/// Where `make debian-guest` put the image, when the test was asked for (outside the suite: its trait reads it).
enum DebianGuestImage {
    static var directory: String? { ProcessInfo.processInfo.environment["VMSESSIOND_TEST_DEBIAN"] }
}

extension RealGuestSuites {
@Suite(
    "Debian guest with real cloud-init", .serialized,
    .enabled(
        if: DebianGuestImage.directory != nil,
        "the Debian guest boots for minutes under TCG: it runs in `make test-debian` (VMSESSIOND_TEST_DEBIAN=<the directory of debian.qcow2, built by `make debian-guest`>)")
)
struct DebianGuestTests {
    /// A boot and cloud-init's run under TCG take minutes on a busy machine; this only bounds a hung guest.
    static let bootTimeout: Duration = .seconds(900)

    @Test("#cloud-config (users, write_files, runcmd) and #!/bin/sh user-data, both with ${name} templates, run under real cloud-init, which reports success; the guest API answers through the proxy")
    func cloudInitContextualizesDebian() async throws {
        let image = try #require(DebianGuestImage.directory) + "/debian.qcow2"
        try #require(FileManager.default.fileExists(atPath: image), "the Debian guest is not built at \(image): run `make debian-guest`")
        let directory = try TemporaryDirectory("vms-e2e-debian")
        let state = directory.path + "/state"
        let daemon = DaemonProcess(stateDirectory: state, arguments: ["--accelerator", "tcg", "--stop-grace", "30"])
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let added = try await api.call(
            .POST, "/api/v1/images", token: try daemon.adminToken(), body: #"{"version":"debian","path":"\#(image)","format":"qcow2"}"#)
        #expect(added.status == 201, "\(added.json)")

        // #cloud-config: a user, a file, commands; parameters fill the template before cloud-init reads it.
        let user = "page\(Int.random(in: 1000...9999))"
        let word = "cloud-config-\(UUID().uuidString.prefix(8))"
        let cloudConfig = """
            #cloud-config
            users:
              - name: ${user}
                shell: /bin/bash
                gecos: ${gecos:made by cloud-init}
            write_files:
              - path: /www/written.txt
                content: |
                  ${word}
            runcmd:
              - [sh, -c, "getent passwd ${user} > /www/user.txt"]
              - [sh, -c, "hostname > /www/hostname.txt"]

            """
        let first = try await Self.boot(
            api: api, state: state, name: "debian-cloud-config", userData: cloudConfig, parameters: ["user": user, "word": word])
        #expect(first.report.contains(#""errors": []"#), "result.json lists no errors: \(first.report)")
        let written = try await GuestAPITests.fetch(first.apiURL + "/written.txt", token: first.token)
        #expect(written.status == 200 && written.body == word + "\n", "write_files wrote the parameter's value: \(written)")
        let passwd = try await GuestAPITests.fetch(first.apiURL + "/user.txt", token: first.token).body
        #expect(passwd.hasPrefix(user + ":") && passwd.contains(":made by cloud-init:") && passwd.hasSuffix(":/bin/bash\n"), "users made \(user), runcmd ran: \(passwd)")
        let hostname = try await GuestAPITests.fetch(first.apiURL + "/hostname.txt", token: first.token).body
        #expect(hostname == "vms-\(first.id.prefix(8))\n", "the seed's meta-data named the host: \(hostname)")

        // #!/bin/sh: cloud-init runs it as the user's script, with the parameter substituted.
        let shellWord = "shell-\(UUID().uuidString.prefix(8))"
        let script = "#!/bin/sh\necho \"${word} from $(id -un)\" > /www/index.html\n"
        let second = try await Self.boot(api: api, state: state, name: "debian-shell", userData: script, parameters: ["word": shellWord])
        let page = try await GuestAPITests.fetch(second.apiURL + "/", token: second.token)
        #expect(page.status == 200 && page.body == "\(shellWord) from root\n", "the script ran with the value filled in: \(page)")
        #expect(try await GuestAPITests.fetch(second.apiURL + "/").status == 401, "no token, no guest")

        for session in [first, second] {
            #expect(try await api.call(.POST, "/api/v1/sessions/\(session.id)/close", token: session.token).status == 202)
        }
        try await daemon.stop()
    }

    /// One session of the Debian image started with `userData`: waits for its guest API and for cloud-init's
    /// report on the console, prints how long each took from `start` (cold boot under TCG; a figure, never
    /// judged here), and checks that cloud-init says `done`.
    static func boot(
        api: APIClient, state: String, name: String, userData: String, parameters: [String: String]
    ) async throws -> (id: String, token: String, apiURL: String, report: String) {
        let (id, token) = try await api.newSession(name)
        let session = "/api/v1/sessions/\(id)"
        let console = "\(state)/machines/\(id)/console.log"
        let body = try String(
            decoding: JSONSerialization.data(withJSONObject: ["userData": userData, "parameters": parameters]), as: UTF8.self)
        return try await api.withEvents(session: id, token: token, since: 0) { log in
            let open = try await api.call(.POST, session + "/open", token: token, body: #"{"version":"debian","memory":512,"disk":2048}"#)
            #expect(open.status == 202, "\(open.json)")
            _ = try await log.state("open")
            let clock = ContinuousClock()
            let started = clock.now
            #expect(try await api.call(.POST, session + "/start", token: token, body: body).status == 202)
            _ = try await log.state("running")
            let available = try await log.next("apiAvailable", timeout: bootTimeout)
            let apiUp = clock.now - started
            let apiURL = try #require(available.payload["apiURL"] as? String)
            #expect(available.payload["ip"] as? String == "10.0.2.15", "DHCP gave the guest passt's address")
            let report = try await waitForReport(console)
            let done = clock.now - started
            print("Debian guest \(name): guest API up \(apiUp), cloud-init done \(done) after start (cold boot, TCG)")
            #expect(report.contains("VMSESSION-DEBIAN: cloud-init done"), "cloud-init reports success: \(report)")
            #expect(report.contains("datasource: DataSourceNoCloud") || report.contains("DataSourceNoCloud"), "the NoCloud seed was the datasource: \(report)")
            return (id, token, apiURL, report)
        }
    }

    /// What the image's vmsession-cloud-init-report service printed on the serial console, once it is complete.
    static func waitForReport(_ console: String) async throws -> String {
        let clock = ContinuousClock()
        let deadline = clock.now + bootTimeout
        while clock.now < deadline {
            if let text = try? String(contentsOfFile: console, encoding: .utf8),
                let start = text.range(of: "VMSESSION-DEBIAN: cloud-init "),
                let end = text.range(of: "VMSESSION-DEBIAN: report end", range: start.upperBound..<text.endIndex)
            {
                return String(text[start.lowerBound..<end.upperBound])
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        throw DaemonError("cloud-init's report never showed on the console \(console)")
    }
}
}
