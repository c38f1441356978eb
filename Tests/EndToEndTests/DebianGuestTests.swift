import Foundation
import Testing
import VMSessionTestSupport

/// A real distribution contextualized by real cloud-init: the Debian 12 guest (`make debian-guest`,
/// Contextualization/debian) registered as an image, booted under TCG through the daemon, with the NoCloud
/// seed the daemon writes. Its boots take minutes under TCG, so it runs in `make test-debian` (which sets
/// VMSESSIOND_TEST_DEBIAN to the built image's directory), not in `make test`.
/// Where `make debian-guest` put the image, when the test was asked for (outside the suite: its trait reads it).
enum DebianGuestImage {
    static var directory: String? { ProcessInfo.processInfo.environment["VMSESSIOND_TEST_DEBIAN"] }
    /// The warm-start tests run cloud-init two or three more times under TCG (10–30 minutes in all), so they
    /// run in `make test-debian-warm` only (VMSESSIOND_TEST_DEBIAN_WARM=1), not in CI's `make test-debian`.
    static var warm: Bool { ProcessInfo.processInfo.environment["VMSESSIOND_TEST_DEBIAN_WARM"] == "1" }
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

    @Test("a template made from a Debian session starts sessions warm, each a machine of its own (host name, machine-id) that runs its own #cloud-config or #!/bin/sh user-data with real cloud-init; the guest API answers through the proxy in each; closing one leaves the other and the template", .enabled(if: DebianGuestImage.warm, "cloud-init runs again in each warm session, minutes each under TCG: it runs in `make test-debian-warm`"))
    func warmSessionsRunTheirOwnUserData() async throws {
        try await Self.withDaemon("vms-e2e-debian-warm", Self.warmSessions)
    }

    /// Runs `body` with a TCG daemon (not yet started) on a temporary state directory and the built image; if it
    /// fails half-way, stops the daemon and ends the VMs and helpers it left (they outlive their daemon).
    static func withDaemon(_ tag: String, _ body: (DaemonProcess, String, String) async throws -> Void) async throws {
        let image = try #require(DebianGuestImage.directory) + "/debian.qcow2"
        try #require(FileManager.default.fileExists(atPath: image), "the Debian guest is not built at \(image): run `make debian-guest`")
        let directory = try TemporaryDirectory(tag)
        let state = directory.path + "/state"
        let daemon = DaemonProcess(stateDirectory: state, arguments: ["--accelerator", "tcg", "--stop-grace", "30"])
        do {
            try await body(daemon, image, state)
        } catch {
            try? await daemon.stop()
            TemplateTests.endProcesses(of: state, ids: (try? FileManager.default.contentsOfDirectory(atPath: state + "/machines")) ?? [])
            throw error
        }
    }

    @Test("a template of the Debian image made by the daemon from a warm-up user-data: the warm-up's work is in the session started from it, which runs its own user-data with real cloud-init", .enabled(if: DebianGuestImage.warm, "cloud-init runs again in each warm session, minutes each under TCG: it runs in `make test-debian-warm`"))
    func templateFromImageWithWarmUp() async throws {
        try await Self.withDaemon("vms-e2e-debian-warmup") { daemon, image, state in
            try await daemon.start()
            let api = APIClient(port: daemon.port)
            let admin = try daemon.adminToken()
            let added = try await api.call(.POST, "/api/v1/images", token: admin, body: #"{"version":"debian","path":"\#(image)","format":"qcow2"}"#)
            #expect(added.status == 201, "\(added.json)")
            // The warm-up: work worth keeping (a file), then the ready line on the serial console.
            let warmUp = "#!/bin/sh\necho warmed > /www/warm.txt\necho VMSESSION-TEMPLATE-READY > /dev/ttyS0\n"
            let body = try String(
                decoding: JSONSerialization.data(withJSONObject: [
                    "name": "debian-img", "fromImage": "debian", "memory": 512, "disk": 2048, "readyTimeout": 900, "userData": warmUp,
                ]), as: UTF8.self)
            let clock = ContinuousClock()
            let began = clock.now
            #expect(try await api.call(.POST, "/api/v1/templates", token: admin, body: body).status == 202)
            var status: [String: Any] = [:]
            while clock.now < began + Self.bootTimeout {
                status = try await api.call(.GET, "/api/v1/templates/debian-img/warm-up", token: admin).json
                if status["status"] as? String != "running" { break }
                try await Task.sleep(for: .seconds(1))
            }
            print("Debian template from the image with a warm-up: \(status["status"] ?? "?") after \(clock.now - began)")
            #expect(status["status"] as? String == "succeeded", "\(status)")
            let sessions = try await api.call(.GET, "/api/v1/sessions", token: admin)["sessions"] as? [Any] ?? []
            #expect(sessions.isEmpty, "the internal session is gone: \(sessions)")

            let (id, token) = try await api.newSession("debian-from-image")
            let path = "/api/v1/sessions/\(id)"
            #expect(try await SnapshotTests.operation(api, path + "/open", token: token, body: #"{"version":"debian-img"}"#)["status"] as? String == "succeeded")
            let word = "own-\(UUID().uuidString.prefix(8))"
            let start = try String(
                decoding: JSONSerialization.data(withJSONObject: ["userData": "#!/bin/sh\necho \(word) > /www/index.html\n"]), as: UTF8.self)
            let started = clock.now
            #expect(try await SnapshotTests.operation(api, path + "/start", token: token, body: start)["status"] as? String == "succeeded")
            let apiURL = try #require(try await api.call(.GET, path, token: token)["apiURL"] as? String)
            var page = (status: 0, body: "")
            while clock.now < started + Self.bootTimeout {
                page = (try? await GuestAPITests.fetch(apiURL + "/", token: token)) ?? (0, "")
                if page.body == word + "\n" { break }
                try await Task.sleep(for: .milliseconds(500))
            }
            print("Debian session from the warmed-up template: its user-data ran \(clock.now - started) after start")
            #expect(page.status == 200 && page.body == word + "\n", "the session's own user-data ran: \(page)")
            let warmed = try await GuestAPITests.fetch(apiURL + "/warm.txt", token: token)
            #expect(warmed.status == 200 && warmed.body == "warmed\n", "the warm-up's work is there: \(warmed)")
            let log = (try? String(contentsOfFile: "\(state)/machines/\(id)/console.log", encoding: .utf8)) ?? ""
            #expect(log.contains("VMSESSION-DEBIAN: seed changed: instance-id \(id)"), "the guest saw the session's seed")
            #expect(try await SnapshotTests.operation(api, path + "/close", token: token)["status"] as? String == "succeeded")
            #expect(try await api.call(.DELETE, "/api/v1/templates/debian-img", token: admin).status == 204)
            try await daemon.stop()
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: state + "/machines")) ?? []).isEmpty)
        }
    }

    static func warmSessions(daemon: DaemonProcess, image: String, state: String) async throws {
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let admin = try daemon.adminToken()
        let added = try await api.call(.POST, "/api/v1/images", token: admin, body: #"{"version":"debian","path":"\#(image)","format":"qcow2"}"#)
        #expect(added.status == 201, "\(added.json)")
        func console(_ id: String) -> String { "\(state)/machines/\(id)/console.log" }
        /// What the guest says about itself, written by each user-data: its host name and machine-id, and the
        /// kernel's boot id (the same in every session from one template: they are one boot, restored), and 16
        /// bytes of /dev/urandom (different in each: the seed watch reseeds the restored kernel's generator).
        let identity = #"echo "$(hostname) $(cat /etc/machine-id)" > /www/identity.txt; cat /proc/sys/kernel/random/boot_id > /www/boot.txt; head -c 16 /dev/urandom | od -An -tx1 | tr -dc 0-9a-f > /www/random.txt"#

        // The prepared session: a cold boot, its own user-data, cloud-init done.
        let prepared = try await Self.boot(
            api: api, state: state, name: "debian-template-source", userData: "#!/bin/sh\necho template > /www/index.html\n\(identity)\n",
            parameters: [:])
        let sourceIdentity = try await GuestAPITests.fetch(prepared.apiURL + "/identity.txt", token: prepared.token).body
        #expect(sourceIdentity.hasPrefix("vms-\(prepared.id.prefix(8)) "), "\(sourceIdentity)")
        // Its seed watch (started after the boot's cloud-init) waits on the daemon's seed signal: the template's
        // memory holds it waiting there, so each session's restore wakes it (asserted for each below).
        let watching = "VMSESSION-DEBIAN: seed watch: "
        let watchDeadline = ContinuousClock.now + .seconds(120)
        var watchLine = ""
        while ContinuousClock.now < watchDeadline {
            let log = (try? String(contentsOfFile: console(prepared.id), encoding: .utf8)) ?? ""
            if let line = log.components(separatedBy: "\n").first(where: { $0.contains(watching) }) { watchLine = line; break }
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(watchLine.contains("woken by the daemon's signal on /dev/ttyS1"), "the seed watch uses the signal port: '\(watchLine)'")
        let made = try await SnapshotTests.operation(api, "/api/v1/templates", token: admin, body: #"{"name":"debian-warm","fromSession":"\#(prepared.id)"}"#)
        #expect(made["status"] as? String == "succeeded", "\(made)")
        let templateBytes = try await TemplateTests.templateNames(api, admin: admin)["debian-warm"]?["bytes"] as? Int ?? 0
        print("Debian template: \(templateBytes) bytes (memory image and disk copy)")

        // Two sessions from it, one after the other (each measured alone): A with #cloud-config, B with a script.
        let wordA = "warm-a-\(UUID().uuidString.prefix(8))"
        let wordB = "warm-b-\(UUID().uuidString.prefix(8))"
        let userData = [
            "A": """
                #cloud-config
                write_files:
                  - path: /www/a.txt
                    content: |
                      ${word}
                runcmd:
                  - '\(identity)'
                  - [sh, -c, "echo ${word} > /www/index.html"]

                """,
            "B": "#!/bin/sh\necho \"${word}\" > /www/b.txt\n\(identity)\necho \"${word}\" > /www/index.html\n",
        ]
        var warm: [(tag: String, id: String, token: String, apiURL: String, word: String)] = []
        for (tag, word) in [("A", wordA), ("B", wordB)] {
            let (id, token) = try await api.newSession("debian-warm-\(tag)")
            let path = "/api/v1/sessions/\(id)"
            let body = try String(
                decoding: JSONSerialization.data(withJSONObject: ["userData": userData[tag] ?? "", "parameters": ["word": word]]), as: UTF8.self)
            let clock = ContinuousClock()
            let opened = clock.now
            #expect(try await SnapshotTests.operation(api, path + "/open", token: token, body: #"{"version":"debian-warm"}"#)["status"] as? String == "succeeded")
            let started = clock.now
            let start = try await SnapshotTests.operation(api, path + "/start", token: token, body: body)
            #expect(start["status"] as? String == "succeeded", "\(start)")
            let running = clock.now
            let apiURL = try #require(try await api.call(.GET, path, token: token)["apiURL"] as? String)
            // The user-data ran once its page is the session's own word.
            let deadline = clock.now + bootTimeout
            var ran: Duration?
            while clock.now < deadline {
                if let page = try? await GuestAPITests.fetch(apiURL + "/", token: token), page.status == 200, page.body == word + "\n" {
                    ran = clock.now - started
                    break
                }
                try await Task.sleep(for: .milliseconds(250))
            }
            let report = try await waitForReport(console(id))
            let done = clock.now - started
            print(
                "Debian guest warm \(tag): open+start to running \(running - opened) (start \(running - started)), "
                    + "user-data ran \(ran.map { "\($0)" } ?? "never") after start, cloud-init done \(done) (warm start from a template, TCG)")
            #expect(ran != nil, "session \(tag)'s own user-data wrote its page")
            #expect(report.contains("VMSESSION-DEBIAN: cloud-init done"), "cloud-init reports success for session \(tag): \(report)")
            let log = (try? String(contentsOfFile: console(id), encoding: .utf8)) ?? ""
            let changed = log.components(separatedBy: "\n").first { $0.contains("VMSESSION-DEBIAN: seed changed: instance-id \(id)") }
            #expect(changed != nil, "the guest saw session \(tag)'s seed")
            let reseedFailure = log.components(separatedBy: "\n").first { $0.contains("could not reseed") }
            #expect(reseedFailure == nil, "the watch reseeded session \(tag)'s random generator: \(reseedFailure ?? "")")
            let ranAgain = log.components(separatedBy: "\n").first { $0.contains("VMSESSION-DEBIAN: cloud-init ran again in") }
            #expect(
                ranAgain?.contains("forked from the imported cloud-init") == true,
                "session \(tag)'s cloud-init ran from the watch's imported process, not through the units' fallback: \(ranAgain ?? "no line")")
            #expect(changed?.contains("found on the daemon's signal") == true, "the seed signal woke the guest, not its poll: \(changed ?? "")")
            warm.append((tag, id, token, apiURL, word))
        }

        for session in warm {
            let disk = try FileManager.default.attributesOfItem(atPath: "\(state)/machines/\(session.id)/disk.qcow2")[.size] as? Int ?? 0
            print("Debian guest warm \(session.tag): its own disk (qcow2 overlay) is \(disk) bytes")
        }
        // Each is its own machine: its own files, host name and machine-id, through the daemon's proxy.
        var identities: Set<String> = [sourceIdentity]
        var machineIDs: Set<Substring> = [sourceIdentity.split(separator: " ").last ?? ""]
        var randomBytes: Set<String> = [try await GuestAPITests.fetch(prepared.apiURL + "/random.txt", token: prepared.token).body]
        let sourceBoot = try await GuestAPITests.fetch(prepared.apiURL + "/boot.txt", token: prepared.token).body
        for (tag, id, token, apiURL, word) in warm {
            let own = try await GuestAPITests.fetch(apiURL + "/\(tag.lowercased()).txt", token: token)
            #expect(own.status == 200 && own.body == word + "\n", "session \(tag)'s file: \(own)")
            let other = tag == "A" ? "b" : "a"
            #expect(try await GuestAPITests.fetch(apiURL + "/\(other).txt", token: token).status == 404, "session \(tag) has no other session's file")
            let said = try await GuestAPITests.fetch(apiURL + "/identity.txt", token: token).body
            #expect(said.hasPrefix("vms-\(id.prefix(8)) "), "session \(tag) is named by its own seed: \(said)")
            identities.insert(said)
            machineIDs.insert(said.split(separator: " ").last ?? "")
            randomBytes.insert(try await GuestAPITests.fetch(apiURL + "/random.txt", token: token).body)
            let boot = try await GuestAPITests.fetch(apiURL + "/boot.txt", token: token).body
            #expect(boot == sourceBoot && boot.count > 30, "session \(tag) did not boot: it runs on the template's boot \(sourceBoot), not \(boot)")
        }
        #expect(identities.count == 3, "three machines, three host names and machine-ids: \(identities)")
        // A host name comes from the seed; a machine-id and urandom's bytes come from the kernel's generator,
        // which the restore handed over from the template: each session must still draw its own.
        #expect(machineIDs.count == 3 && !machineIDs.contains(""), "three machine-ids: \(machineIDs)")
        #expect(randomBytes.count == 3 && randomBytes.allSatisfy { $0.count == 32 }, "three sessions, three draws from /dev/urandom: \(randomBytes)")

        // Closing A leaves B and the template.
        #expect(try await SnapshotTests.operation(api, "/api/v1/sessions/\(warm[0].id)/close", token: warm[0].token)["status"] as? String == "succeeded")
        let stillB = try await GuestAPITests.fetch(warm[1].apiURL + "/", token: warm[1].token)
        #expect(stillB.status == 200 && stillB.body == warm[1].word + "\n", "B answers after A closed: \(stillB)")
        #expect(try await TemplateTests.templateNames(api, admin: admin)["debian-warm"]?["sessions"] as? [String] == [warm[1].id])
        for (id, token) in [(warm[1].id, warm[1].token), (prepared.id, prepared.token)] {
            #expect(try await SnapshotTests.operation(api, "/api/v1/sessions/\(id)/close", token: token)["status"] as? String == "succeeded")
        }
        #expect(try await api.call(.DELETE, "/api/v1/templates/debian-warm", token: admin).status == 204)
        try await daemon.stop()
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: state + "/machines")) ?? []).isEmpty)
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
