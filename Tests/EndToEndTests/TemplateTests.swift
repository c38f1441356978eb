import Foundation
import Testing
import VMSessionTestSupport

/// Templates on a real guest (the appliance under TCG, libvirt's embedded driver): a prepared session made
/// into a template, and sessions that start from it warm, each its own machine with its own user-data.
extension RealGuestSuites {
@Suite("Templates that start warm", .serialized)
struct TemplateTests {
    /// The prepared guest counts seconds on its console: `TPLTICK <n>`.
    static let prepare = #"#!/bin/sh\ni=0\nwhile :; do i=$((i+1)); echo \"TPLTICK $i\"; sleep 1; done &\n"#

    /// A warm session's own user-data: a file of its own in the guest's RAM, and a line a second naming the
    /// `own-*` files the guest holds: `TPLFILES <tag> <files> END`.
    static func own(_ tag: String) -> String {
        #"#!/bin/sh\necho \"TPLUSERDATA \#(tag) ran\"\necho \#(tag) > /tmp/own-\#(tag)\nwhile :; do echo \"TPLFILES \#(tag) $(ls /tmp | grep own- | tr '\\n' ' ')END\"; sleep 1; done &\n"#
    }

    static func lines(_ console: String, after offset: Int = 0) -> [String] {
        guard let data = FileManager.default.contents(atPath: console), data.count > offset else { return [] }
        return String(decoding: data.dropFirst(offset), as: UTF8.self).split(whereSeparator: \.isNewline).map(String.init)
    }

    static func ticks(_ console: String, after offset: Int = 0) -> [Int] {
        lines(console, after: offset).compactMap { line in
            let words = line.split(separator: " ")
            guard let at = words.firstIndex(of: "TPLTICK"), words.count > at + 1 else { return nil }
            return Int(words[at + 1].filter(\.isNumber))
        }
    }

    static func waitFor(_ what: String, timeout: Duration = .seconds(180), _ found: () -> Bool) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if found() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw DaemonError("\(what): not seen within \(timeout)")
    }

    /// A session's console log in a daemon's state directory.
    static func console(_ state: String, _ id: String) -> String { "\(state)/machines/\(id)/console.log" }

    /// Runs an action through its operation and expects it to succeed.
    static func succeed(_ api: APIClient, _ path: String, token: String, body: String? = nil) async throws {
        let done = try await SnapshotTests.operation(api, path, token: token, body: body)
        #expect(done["status"] as? String == "succeeded", "\(path): \(done)")
    }

    /// A new session `name`, opened with `open` and started with `userData`.
    static func started(_ api: APIClient, _ name: String, open: String, userData: String) async throws -> (id: String, token: String) {
        let (id, token) = try await api.newSession(name)
        try await succeed(api, "/api/v1/sessions/\(id)/open", token: token, body: open)
        try await succeed(api, "/api/v1/sessions/\(id)/start", token: token, body: #"{"userData":"\#(userData)"}"#)
        return (id, token)
    }

    /// The prepared session a template is made from: the appliance, 1 CPU, 256 MiB, booted with `userData`.
    static func prepared(_ api: APIClient, _ name: String, userData: String) async throws -> (id: String, token: String) {
        try await started(api, name, open: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#, userData: userData)
    }

    /// A template `name` made from session `source`.
    static func makeTemplate(_ api: APIClient, _ name: String, from source: String, admin: String) async throws {
        try await succeed(api, "/api/v1/templates", token: admin, body: #"{"name":"\#(name)","fromSession":"\#(source)"}"#)
    }

    /// Closes each session.
    static func closeAll(_ api: APIClient, _ sessions: [(id: String, token: String)]) async throws {
        for (id, token) in sessions { try await succeed(api, "/api/v1/sessions/\(id)/close", token: token) }
    }

    static func templateNames(_ api: APIClient, admin: String) async throws -> [String: [String: Any]] {
        let list = try await api.call(.GET, "/api/v1/templates", token: admin)
        return Dictionary(
            uniqueKeysWithValues: (list["templates"] as? [[String: Any]] ?? []).compactMap { t in (t["name"] as? String).map { ($0, t) } })
    }

    /// Runs `body` with a TCG daemon on the appliance in a temporary state directory; if it fails half-way, stops
    /// the daemon and ends the VMs and helpers it left (they outlive their daemon).
    static func withDaemon(_ tag: String, _ body: (DaemonProcess, String) async throws -> Void) async throws {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "the appliance must be built first: \(appliance)")
        let directory = try TemporaryDirectory(tag)
        let state = directory.path + "/state"
        let daemon = DaemonProcess(stateDirectory: state, arguments: ["--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "5"])
        do {
            try await body(daemon, state)
        } catch {
            try? await daemon.stop()
            Self.endProcesses(of: state, ids: (try? FileManager.default.contentsOfDirectory(atPath: state + "/machines")) ?? [])
            throw error
        }
    }

    /// Ends every process that names `state` or one of `ids` (the VMs' qemu and their network helpers): what
    /// a test that stopped half-way leaves running, since VMs outlive their daemon.
    static func endProcesses(of state: String, ids: [String]) {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), pid != getpid(), let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            let line = String(decoding: data, as: UTF8.self)
            if line.contains(state) || ids.contains(where: { line.contains($0) }) { kill(pid, SIGKILL) }
        }
    }

    @Test("a template resumes its guest's counting in new sessions, each its own machine running its own user-data; closing one harms nothing; templates outlive a restart")
    func warmSessions() async throws {
        try await Self.withDaemon("vms-e2e-tpl", Self.warmSessions)
    }

    @Test("a daemon killed in the middle of a warm start leaves the session as its VM is, and startable; the template intact")
    func killedDuringWarmStart() async throws {
        try await Self.withDaemon("vms-e2e-tplkill", Self.killedDuringWarmStart)
    }

    @Test("a template from an image and a one-time warm-up user-data: the daemon boots it, waits for the guest's ready line, makes the template and leaves no session; a guest that never says ready, or a missing image, leaves nothing")
    func templateFromImage() async throws {
        try await Self.withDaemon("vms-e2e-tplimg", Self.templateFromImage)
    }

    @Test("a template saved while the guest's seed watch has its seed mounted but not yet read: a warm session from it still runs its own whole user-data")
    func templateSavedMidSeedRead() async throws {
        try await Self.withDaemon("vms-e2e-tplmid", Self.templateSavedMidSeedRead)
    }

    @Test("templates made the moment the prepared guest says ready (as the benchmark makes them): each warm session runs its own whole user-data")
    func templatesMadeRightAfterReady() async throws {
        try await Self.withDaemon("vms-e2e-tplready", Self.templatesMadeRightAfterReady)
    }

    @Test("two sessions from one template draw different bytes from the guest's /dev/urandom right after their warm start (the guest reseeds its kernel's generator from its seed's random_seed)")
    func warmSessionsDrawTheirOwnRandomBytes() async throws {
        try await Self.withDaemon("vms-e2e-tplrng", Self.warmSessionsDrawTheirOwnRandomBytes)
    }

    /// The first thing a warm session's user-data does: 16 bytes of the guest's /dev/urandom, as
    /// `TPLRANDOM <tag> <md5 of them>`.
    static func drawRandom(_ tag: String) -> String {
        #"#!/bin/sh\necho \"TPLRANDOM \#(tag) $(head -c 16 /dev/urandom | md5sum | cut -c1-32)\"\n"#
    }

    static func warmSessionsDrawTheirOwnRandomBytes(daemon: DaemonProcess, state: String) async throws {
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let admin = try daemon.adminToken()
        // The different bytes alone do not fail without the guest's reseed, on this machine: with an appliance
        // without it they differed too, with the template made right after `ready` and with it made at 40 s of the
        // guest's uptime (the kernel reseeds on its own once its seed is older than half its uptime, at most a
        // minute, and the restored guest's reads came after that), and when the template's guest was reseeded
        // (RNDRESEEDCRNG) right before its save at some 15 s of uptime, so that no scheduled reseed was due when
        // the sessions drew (two runs). So the test also holds each guest to its word that it reseeded its
        // generator from the session's seed before the user-data ran: the `seed changed` line says so only when
        // the reseed succeeded.
        let source = try await prepared(api, "rng-source", userData: #"#!/bin/sh\necho prepared\n"#)
        try await waitFor("the prepared guest's ready line") { lines(console(state, source.id)).contains { $0.contains("VMSESSION-APPLIANCE: ready") } }
        try await makeTemplate(api, "rng", from: source.id, admin: admin)
        var drawn: [String: String] = [:]
        var sessions = [source]
        for tag in ["A", "B"] {
            let (id, token) = try await started(api, "rng-\(tag)", open: #"{"version":"rng"}"#, userData: drawRandom(tag))
            sessions.append((id, token))
            try await waitFor("session \(tag)'s random bytes", timeout: .seconds(60)) {
                guard let line = lines(console(state, id)).first(where: { $0.contains("TPLRANDOM \(tag) ") }) else { return false }
                drawn[tag] = line.split(separator: " ").last.map(String.init)
                return true
            }
            let log = lines(console(state, id))
            #expect(!log.contains { $0.contains("could not reseed") }, "the guest reseeded its generator")
            #expect(
                log.contains { $0.contains("VMSESSION-APPLIANCE: seed changed") && $0.hasSuffix("; generator reseeded)") },
                "the guest says it reseeded its generator from session \(tag)'s seed: \(log.suffix(6))")
        }
        let a = try #require(drawn["A"]), b = try #require(drawn["B"])
        #expect(a.count == 32 && b.count == 32, "\(a) \(b)")
        #expect(a != b, "two sessions from one template drew the same bytes from /dev/urandom: \(a)")
        try await closeAll(api, sessions)
        #expect(try await api.call(.DELETE, "/api/v1/templates/rng", token: admin).status == 204)
        try await daemon.stop()
    }

    /// The warm-up: counts seconds (as ``prepare``), then says it is ready on the console.
    static let warmUp = #"#!/bin/sh\ni=0\nwhile :; do i=$((i+1)); echo \"TPLTICK $i\"; sleep 1; done &\nsleep 2\necho VMSESSION-TEMPLATE-READY\n"#

    /// Polls a warm-up until it ends; returns it as it ended.
    static func warmUpEnd(_ api: APIClient, _ name: String, admin: String) async throws -> [String: Any] {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(300)
        while clock.now < deadline {
            let status = try await api.call(.GET, "/api/v1/templates/\(name)/warm-up", token: admin)
            #expect(status.status == 200, "\(status.json)")
            if status["status"] as? String != "running" { return status.json }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw DaemonError("the warm-up of \(name) did not end")
    }

    static func sessionNames(_ api: APIClient, admin: String) async throws -> [String] {
        (try await api.call(.GET, "/api/v1/sessions", token: admin)["sessions"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
    }

    static func templateFromImage(daemon: DaemonProcess, state: String) async throws {
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let admin = try daemon.adminToken()
        func machines() -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: state + "/machines")) ?? [] }

        // Refused at once, and nothing made: an unknown image, no user-data, both sources, a page's token.
        let noImage = try await api.call(.POST, "/api/v1/templates", token: admin, body: #"{"name":"w","fromImage":"no-such","userData":"x"}"#)
        #expect(noImage.status == 404 && noImage.errorCode == "not_found", "\(noImage.json)")
        let noUserData = try await api.call(.POST, "/api/v1/templates", token: admin, body: #"{"name":"w","fromImage":"appliance"}"#)
        #expect(noUserData.status == 400 && "\(noUserData.json)".contains("VMSESSION-TEMPLATE-READY"), "\(noUserData.json)")
        let both = try await api.call(
            .POST, "/api/v1/templates", token: admin, body: #"{"name":"w","fromImage":"appliance","userData":"x","fromSession":"\#(UUID())"}"#)
        #expect(both.status == 400, "\(both.json)")
        let badTimeout = try await api.call(
            .POST, "/api/v1/templates", token: admin, body: #"{"name":"w","fromImage":"appliance","userData":"x","readyTimeout":0}"#)
        #expect(badTimeout.status == 400 && "\(badTimeout.json)".contains("readyTimeout"), "\(badTimeout.json)")
        let (_, pageToken) = try await api.newSession("page")
        #expect(try await api.call(.POST, "/api/v1/templates", token: pageToken, body: #"{"name":"w","fromImage":"appliance","userData":"x"}"#).status == 403)
        #expect(try await api.call(.GET, "/api/v1/templates/w/warm-up", token: admin).status == 404)
        #expect(try await sessionNames(api, admin: admin) == ["page"] && machines().isEmpty)

        // A guest that never says it is ready: the warm-up fails after its timeout and leaves nothing.
        let never = try await api.call(
            .POST, "/api/v1/templates", token: admin,
            body: ##"{"name":"never","fromImage":"appliance","memory":256,"disk":64,"readyTimeout":8,"userData":"#!/bin/sh\necho not ready\n"}"##)
        #expect(never.status == 202 && never["status"] as? String == "running", "\(never.json)")
        let again = try await api.call(.POST, "/api/v1/templates", token: admin, body: #"{"name":"never","fromImage":"appliance","userData":"x"}"#)
        #expect(again.status == 409, "one warm-up of a name at a time: \(again.json)")
        let failed = try await warmUpEnd(api, "never", admin: admin)
        #expect(failed["status"] as? String == "failed", "\(failed)")
        #expect((failed["error"] as? [String: Any])?["code"] as? String == "guest_not_ready", "\(failed)")
        #expect(try await templateNames(api, admin: admin).isEmpty)
        #expect(try await sessionNames(api, admin: admin) == ["page"], "the internal session is gone")
        #expect(machines().isEmpty, "its VM and disks are gone: \(machines())")

        // The warm-up that says ready: a template, and no internal session left.
        let made = try await api.call(
            .POST, "/api/v1/templates", token: admin,
            body: #"{"name":"from-image","fromImage":"appliance","memory":256,"disk":64,"userData":"\#(warmUp)"}"#)
        #expect(made.status == 202, "\(made.json)")
        let done = try await warmUpEnd(api, "from-image", admin: admin)
        #expect(done["status"] as? String == "succeeded", "\(done)")
        #expect((done["progress"] as? [String: Any])?["done"] as? Int == 5, "\(done)")
        let listed = try #require(try await templateNames(api, admin: admin)["from-image"])
        #expect(listed["baseVersion"] as? String == "appliance" && listed["memory"] as? Int == 256, "\(listed)")
        #expect(try await sessionNames(api, admin: admin) == ["page"] && machines().isEmpty, "\(machines())")

        // A session from it resumes the warm-up's guest (its count goes on) and runs its own user-data.
        let (id, token) = try await started(api, "from-image-session", open: #"{"version":"from-image"}"#, userData: own("W"))
        let console = "\(state)/machines/\(id)/console.log"
        try await waitFor("the warm session's own user-data") { lines(console).contains { $0.contains("TPLFILES W own-W END") } }
        try await waitFor("the warm-up's count going on") { (ticks(console).first ?? 0) >= 2 }
        #expect(!lines(console).contains { $0.contains("VMSESSION-APPLIANCE: booted") }, "it did not boot")

        // The same by the CLI, from a file; then everything goes.
        let file = state + "/../warm-up.sh"
        try #"#!/bin/sh\necho ${word} > /www/index.html\necho VMSESSION-TEMPLATE-READY\n"#.replacingOccurrences(of: "\\n", with: "\n")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let ctl = ["--url", "http://127.0.0.1:\(daemon.port)", "--state-dir", daemon.stateDirectory, "templates"]
        let byCLI = try await ControlCommandTests.run(
            ctl + ["create", "from-cli", "--from-image", "appliance", "--user-data", file, "--param", "word=hi", "--memory", "256", "--disk", "64"])
        #expect(byCLI.status == 0 && byCLI.output.contains("made template from-cli from image appliance"), "\(byCLI.output)")
        #expect(byCLI.output.contains("[5/5]"), "the CLI showed the warm-up's progress: \(byCLI.output)")
        let refused = try await ControlCommandTests.run(ctl + ["create", "x", "--from-image", "no-such", "--user-data", file])
        #expect(refused.status != 0 && refused.output.contains("no-such"), "\(refused.output)")
        try await closeAll(api, [(id, token)])
        for name in ["from-image", "from-cli"] {
            #expect(try await api.call(.DELETE, "/api/v1/templates/\(name)", token: admin).status == 204)
        }
        try await daemon.stop()
        #expect(machines().isEmpty)
    }

    /// A warm session's user-data longer than any prepared guest's here, whose whole line says it ran whole: a
    /// guest that read it through the template's view of the seed (its directory: the template's file sizes)
    /// runs only its start.
    static func whole(_ tag: String) -> String {
        #"#!/bin/sh\necho TPLWHOLE-\#(tag)-\#(String(repeating: "0123456789", count: 8))-END\n"#
    }

    static func ranWhole(_ console: String, _ tag: String) -> Bool {
        lines(console).contains { $0.contains("TPLWHOLE-\(tag)-\(String(repeating: "0123456789", count: 8))-END") }
    }

    /// Where the daemon's QEMU listens on the VM's seed-signal port (as LibvirtHypervisor.socketPath places it).
    static func seedSignalSocket(state: String, session: String) -> String {
        let beside = "\(state)/machines/\(session)/seed.sock"
        return beside.utf8.count <= 107 ? beside : "/tmp/vmsessiond-\(geteuid())/\(session).seed"
    }

    /// Writes one line on a VM's seed-signal port, as the daemon does after a warm restore, and waits until
    /// QEMU took it (it closes its side after the end of file).
    static func signal(_ path: String) throws {
        let fd = try UnixSocketClient.connect(to: path, "the VM's seed-signal port")
        defer { close(fd) }
        let line = Array("seed\n".utf8)
        try #require(line.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == line.count)
        _ = shutdown(fd, Int32(SHUT_WR))
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var byte: UInt8 = 0
        while poll(&descriptor, 1, 5000) > 0, read(fd, &byte, 1) > 0 {}
    }

    /// The window the benchmark's first warm session fell into, held open: the prepared guest's seed watch is
    /// stopped (a seam of the appliance's /init) right after it mounted its seed and before it read it, and the
    /// template is made then. Restored for a warm session, that watch goes on with the template's mount over
    /// the session's seed; it must notice the drive changed under it and read the seed again, not run the
    /// session's user-data cut to the template's length.
    static func templateSavedMidSeedRead(daemon: DaemonProcess, state: String) async throws {
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let admin = try daemon.adminToken()
        // After the boot's first look at the seed: ask the watch to stop at its next look, then make it look.
        let hold = #"#!/bin/sh\nsleep 2\ntouch /run/vmsession-seedwatch-hold\necho TPLHOLD set\n"#
        let (source, sourceToken) = try await prepared(api, "mid-source", userData: hold)
        try await waitFor("the hold asked for") { lines(console(state, source)).contains { $0.contains("TPLHOLD set") } }
        try await Task.sleep(for: .seconds(1))
        if !lines(console(state, source)).contains(where: { $0.contains("VMSESSION-APPLIANCE: seed watch held") }) {
            try signal(seedSignalSocket(state: state, session: source))
        }
        try await waitFor("the seed watch held with its seed mounted") {
            lines(console(state, source)).contains { $0.contains("VMSESSION-APPLIANCE: seed watch held") }
        }
        try await makeTemplate(api, "mid", from: source, admin: admin)
        let (id, token) = try await started(api, "mid-warm", open: #"{"version":"mid"}"#, userData: whole("M"))
        // The daemon's signal releases the held watch; its whole user-data runs, once.
        try await waitFor("the warm session's whole user-data", timeout: .seconds(60)) { ranWhole(console(state, id), "M") }
        #expect(lines(console(state, id)).filter { $0.contains("VMSESSION-APPLIANCE: seed changed") }.count == 1, "\(lines(console(state, id)).suffix(8))")
        try await closeAll(api, [(id, token), (source, sourceToken)])
        #expect(try await api.call(.DELETE, "/api/v1/templates/mid", token: admin).status == 204)
        try await daemon.stop()
    }

    /// What the benchmark does: a template made as soon as the prepared guest prints its ready line, while its
    /// seed watch makes its first look, then a warm session from it; three times, each from a fresh guest.
    static func templatesMadeRightAfterReady(daemon: DaemonProcess, state: String) async throws {
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let admin = try daemon.adminToken()
        for round in 0..<3 {
            let (source, sourceToken) = try await prepared(api, "ready-source-\(round)", userData: #"#!/bin/sh\necho prepared\n"#)
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(180)
            while clock.now < deadline, !lines(console(state, source)).contains(where: { $0.contains("VMSESSION-APPLIANCE: ready") }) {
                try await Task.sleep(for: .milliseconds(5))
            }
            try await makeTemplate(api, "ready-\(round)", from: source, admin: admin)
            let (id, token) = try await started(api, "ready-warm-\(round)", open: #"{"version":"ready-\#(round)"}"#, userData: whole("R\(round)"))
            try await waitFor("warm session \(round)'s whole user-data", timeout: .seconds(60)) { ranWhole(console(state, id), "R\(round)") }
            try await closeAll(api, [(id, token), (source, sourceToken)])
            #expect(try await api.call(.DELETE, "/api/v1/templates/ready-\(round)", token: admin).status == 204)
        }
        try await daemon.stop()
    }

    static func killedDuringWarmStart(daemon: DaemonProcess, state: String) async throws {
        try await daemon.start()
        var api = APIClient(port: daemon.port)
        let admin = try daemon.adminToken()
        let (source, sourceToken) = try await prepared(api, "kill-source", userData: prepare)
        try await waitFor("the prepared guest counting") { (ticks(console(state, source)).last ?? 0) >= 2 }
        try await makeTemplate(api, "warm", from: source, admin: admin)
        for (index, delay) in [0, 300, 900].enumerated() {
            let (id, token) = try await api.newSession("kill-\(index)")
            let path = "/api/v1/sessions/\(id)"
            try await succeed(api, path + "/open", token: token, body: #"{"version":"warm"}"#)
            #expect(try await api.call(.POST, path + "/start", token: token, body: #"{"userData":"\#(own("K\(index)"))"}"#).status == 202)
            try await Task.sleep(for: .milliseconds(delay))
            daemon.kill9()
            try await daemon.start()
            api = APIClient(port: daemon.port)
            let after = try await api.call(.GET, path, token: token)["state"] as? String
            let hasProcess = RealVMTests.qemuProcess(for: id) != nil
            // The session says what its VM is: running with a process, or open (start it again) without one.
            #expect((after == "running" && hasProcess) || (after == "open" && !hasProcess), "after a kill at \(delay) ms: \(after ?? "?"), qemu \(hasProcess)")
            if after == "open" {
                // A start after the kill works.
                try await succeed(api, path + "/start", token: token, body: #"{"userData":"\#(own("K\(index)"))"}"#)
            }
            #expect(try await api.call(.GET, path, token: token)["state"] as? String == "running")
            try await closeAll(api, [(id, token)])
        }
        // The template is whole: a new session starts warm from it and runs its own user-data.
        let (last, lastToken) = try await started(api, "kill-after", open: #"{"version":"warm"}"#, userData: own("L"))
        try await waitFor("the last session's own user-data") { lines(console(state, last)).contains { $0.contains("TPLFILES L own-L END") } }
        try await closeAll(api, [(last, lastToken), (source, sourceToken)])
        #expect(try await api.call(.DELETE, "/api/v1/templates/warm", token: admin).status == 204)
        try await daemon.stop()
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: state + "/machines")) ?? []).isEmpty)
    }

    static func warmSessions(daemon: DaemonProcess, state: String) async throws {
        try await daemon.start()
        var api = APIClient(port: daemon.port)
        let admin = try daemon.adminToken()

        // The prepared session: booted with user-data that counts seconds.
        let (source, sourceToken) = try await prepared(api, "tpl-source", userData: prepare)
        let sourcePath = "/api/v1/sessions/\(source)"
        try await waitFor("the prepared guest counting") { (ticks(console(state, source)).last ?? 0) >= 3 }

        // Refusals change nothing: a page's token, a bad name, an unknown session.
        #expect(try await api.call(.POST, "/api/v1/templates", token: sourceToken, body: #"{"name":"warm","fromSession":"\#(source)"}"#).status == 403)
        let badName = try await api.call(.POST, "/api/v1/templates", token: admin, body: #"{"name":"not a name","fromSession":"\#(source)"}"#)
        #expect(badName.status == 400 && badName.errorCode == "invalid_argument", "\(badName.json)")
        let unknown = try await api.call(.POST, "/api/v1/templates", token: admin, body: #"{"name":"warm","fromSession":"\#(UUID())"}"#)
        #expect(unknown.status == 404, "\(unknown.json)")

        // The template: made from the running session, which runs on (its count goes on).
        try await makeTemplate(api, "warm", from: source, admin: admin)
        let atTemplate = ticks(console(state, source)).last ?? 0
        #expect(try await api.call(.GET, sourcePath, token: sourceToken)["state"] as? String == "running")
        try await waitFor("the prepared session counting on") { (ticks(console(state, source)).last ?? 0) >= atTemplate + 2 }
        let listed = try #require(try await templateNames(api, admin: admin)["warm"])
        #expect(listed["baseVersion"] as? String == "appliance" && listed["memory"] as? Int == 256, "\(listed)")
        #expect((listed["bytes"] as? Int ?? 0) > 0, "\(listed)")
        let again = try await api.call(.POST, "/api/v1/templates", token: admin, body: #"{"name":"warm","fromSession":"\#(source)"}"#)
        #expect(again.status == 409, "a taken name is refused: \(again.json)")

        // Two sessions from it: each resumes the count where the template was made, runs its own user-data,
        // and holds only its own file.
        var warm: [(tag: String, id: String, token: String)] = []
        for tag in ["A", "B"] {
            let (id, token) = try await api.newSession("tpl-\(tag)")
            let path = "/api/v1/sessions/\(id)"
            try await succeed(api, path + "/open", token: token, body: #"{"memory":512,"disk":64,"version":"warm"}"#)
            let session = try await api.call(.GET, path, token: token)
            #expect(session["memory"] as? Int == 256 && session["version"] as? String == "warm", "the template's memory, not the asked: \(session.json)")
            try await succeed(api, path + "/start", token: token, body: #"{"userData":"\#(own(tag))"}"#)
            #expect(try await api.call(.GET, path, token: token)["state"] as? String == "running")
            warm.append((tag, id, token))
        }
        for (tag, id, _) in warm {
            try await waitFor("session \(tag)'s own user-data") {
                lines(console(state, id)).contains { $0.contains("TPLFILES \(tag) own-\(tag) END") }
            }
            try await waitFor("session \(tag) counting") { !TemplateTests.ticks(console(state, id)).isEmpty }
            let files = lines(console(state, id)).filter { $0.contains("TPLFILES") }
            #expect(files.allSatisfy { $0.contains("TPLFILES \(tag) own-\(tag) END") }, "session \(tag) sees only its own file: \(files)")
            let ticks = ticks(console(state, id))
            #expect(!lines(console(state, id)).contains { $0.contains("VMSESSION-APPLIANCE: booted") }, "session \(tag) did not boot")
            #expect((ticks.first ?? 0) >= 3 && (ticks.first ?? 0) <= atTemplate + 1, "session \(tag) counts on from the template's \(atTemplate): \(ticks.prefix(3))")
        }
        // Both keep counting on their own.
        for (tag, id, _) in warm {
            let now = ticks(console(state, id)).last ?? 0
            try await waitFor("session \(tag) counting") { (ticks(console(state, id)).last ?? 0) >= now + 2 }
        }

        // In use: the template is not deleted, and lists its sessions.
        let refused = try await api.call(.DELETE, "/api/v1/templates/warm", token: admin)
        #expect(refused.status == 409 && refused.errorCode == "invalid_state", "\(refused.json)")
        #expect(Set(try await templateNames(api, admin: admin)["warm"]?["sessions"] as? [String] ?? []) == Set(warm.map(\.id)))

        // Closing A leaves the template and B intact.
        let (_, closedID, closedToken) = warm[0]
        try await closeAll(api, [(closedID, closedToken)])
        #expect(!FileManager.default.fileExists(atPath: "\(state)/machines/\(closedID)"))
        #expect(FileManager.default.fileExists(atPath: "\(state)/templates/warm/memory.save"))
        let bNow = ticks(console(state, warm[1].id)).last ?? 0
        try await waitFor("session B counting after A closed") { (ticks(console(state, warm[1].id)).last ?? 0) >= bNow + 2 }
        #expect(try await templateNames(api, admin: admin)["warm"]?["sessions"] as? [String] == [warm[1].id])

        // The daemon restarts: the template is still there, B still runs, and a new session starts warm from it.
        try await daemon.stop()
        try await daemon.start()
        api = APIClient(port: daemon.port)
        let ctl = ["--url", "http://127.0.0.1:\(daemon.port)", "--state-dir", daemon.stateDirectory, "templates"]
        let byCLI = try await ControlCommandTests.run(ctl + ["list"])
        #expect(byCLI.status == 0 && byCLI.output.contains("warm"), "\(byCLI.output)")
        #expect(try await api.call(.GET, "/api/v1/sessions/\(warm[1].id)", token: warm[1].token)["state"] as? String == "running")
        let (c, cToken) = try await started(api, "tpl-C", open: #"{"version":"warm"}"#, userData: own("C"))
        try await waitFor("session C's own user-data after the restart") {
            lines(console(state, c)).contains { $0.contains("TPLFILES C own-C END") }
        }

        // C stopped and started again with other user-data boots from its own disk (the template's memory no
        // longer matches it) and runs this start's user-data, not its first's.
        let cPath = "/api/v1/sessions/\(c)"
        try await succeed(api, cPath + "/stop", token: cToken)
        let bootedBefore = lines(console(state, c)).count
        try await succeed(api, cPath + "/start", token: cToken, body: #"{"userData":"\#(own("C2"))"}"#)
        try await waitFor("session C's second user-data after a cold boot") {
            lines(console(state, c)).dropFirst(bootedBefore).contains { $0.contains("TPLUSERDATA C2 ran") }
        }
        #expect(lines(console(state, c)).dropFirst(bootedBefore).contains { $0.contains("VMSESSION-APPLIANCE: booted") }, "C booted cold")

        // A second template by the CLI, from the source session; then everything goes.
        let second = try await ControlCommandTests.run(ctl + ["create", "warm-2", "--from-session", "tpl-source"])
        #expect(second.status == 0, "\(second.output)")
        #expect(Set(try await templateNames(api, admin: admin).keys) == ["warm", "warm-2"])
        #expect(try await ControlCommandTests.run(ctl + ["delete", "warm-2"]).status == 0)
        try await closeAll(api, [(warm[1].id, warm[1].token), (c, cToken)])
        #expect(try await api.call(.DELETE, "/api/v1/templates/warm", token: admin).status == 204)
        #expect(try await templateNames(api, admin: admin).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(state)/templates/warm"))
        #expect(try await api.call(.DELETE, "/api/v1/templates/warm", token: admin).status == 404)
        try await closeAll(api, [(source, sourceToken)])
        try await daemon.stop()
    }
}
}
