import Foundation
import Testing
import VMSessionTestSupport

/// What a guest reaches from inside, under each egress policy, with the real daemon, real appliance guests
/// under TCG and real services around them, as root and as an unprivileged user.
///
/// The world the test builds (and tears down): a stand-in for the internet (a web server at 198.51.100.2,
/// a documentation address, in a network namespace of its own), a private network (10.200.0.2 in another),
/// a service on the host's loopback only, a service on every host address (reached through the host's own
/// address), and the daemon's own port. Every address is on the loopback, the host itself, or in a
/// namespace the test made: nothing leaves the machine. Serialized with the other suites that boot guests
/// and measure CPU shares, which a parallel TCG boot would disturb.
extension RealGuestSuites {
@Suite("Guest egress on real VMs", .serialized)
struct GuestEgressTests {
    /// A service the guest tries, and the line the guest prints for it.
    struct Target: Sendable {
        let name: String
        let host: String
        let port: Int
    }

    /// The namespaces, veths and servers of the world around the guests.
    final class World: @unchecked Sendable {
        let tag = String(UUID().uuidString.prefix(6)).lowercased()
        var servers: [Process] = []
        var namespaces: [String] = []
        var links: [String] = []
        let directory: TemporaryDirectory
        var loopbackPort = 0
        var anyAddressPort = 0
        var hostAddress = ""

        init() throws {
            directory = try TemporaryDirectory("vms-egress-world")
            try "reached\n".write(toFile: directory.path + "/marker", atomically: true, encoding: .utf8)
            try Self.run("/bin/chmod", "-R", "a+rX", directory.path)
        }

        /// A namespace `name` linked to the host by a veth pair, the host's side `host`/24 and its own `inside`/24,
        /// serving `marker` on port 80.
        func namespace(_ name: String, host: String, inside: String) throws {
            let ns = "vms\(name)\(tag)"
            let outer = "v\(name.prefix(3))\(tag)"
            namespaces.append(ns)
            links.append(outer)
            try Self.run("/sbin/ip", "netns", "add", ns)
            try Self.run("/sbin/ip", "link", "add", outer, "type", "veth", "peer", "name", "eth9", "netns", ns)
            try Self.run("/sbin/ip", "addr", "add", host + "/24", "dev", outer)
            try Self.run("/sbin/ip", "link", "set", outer, "up")
            try Self.run("/sbin/ip", "-n", ns, "addr", "add", inside + "/24", "dev", "eth9")
            try Self.run("/sbin/ip", "-n", ns, "link", "set", "eth9", "up")
            try Self.run("/sbin/ip", "-n", ns, "link", "set", "lo", "up")
            try Self.run("/sbin/ip", "-n", ns, "route", "add", "default", "via", host)
            try serve(["/sbin/ip", "netns", "exec", ns, "python3", "-m", "http.server", "80", "--bind", inside, "-d", directory.path])
        }

        func serve(_ command: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: command[0])
            process.arguments = Array(command.dropFirst())
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            servers.append(process)
        }

        static func freePort() -> Int { Int.random(in: 20_000...40_000) }

        static func run(_ program: String, _ arguments: String...) throws {
            let (status, output) = try Command.run(program, arguments)
            guard status == 0 else { throw DaemonError("\(program) \(arguments.joined(separator: " ")) failed: \(output)") }
        }

        func tearDown() {
            // SIGKILL: the test runner's children may inherit a signal mask that blocks SIGTERM.
            for server in servers where server.isRunning { kill(server.processIdentifier, SIGKILL) }
            for server in servers { server.waitUntilExit() }
            for ns in namespaces { _ = try? Command.run("/sbin/ip", ["netns", "del", ns]) }
            for link in links { _ = try? Command.run("/sbin/ip", ["link", "del", link]) }
        }

        /// Removes what a killed run of this suite left (its namespaces and veths hold the same addresses).
        static func removeLeftovers() {
            let (_, namespaces) = (try? Command.run("/sbin/ip", ["netns", "list"])) ?? (0, "")
            for line in namespaces.split(separator: "\n") {
                let name = String(line.split(separator: " ").first ?? "")
                if name.hasPrefix("vmspub") || name.hasPrefix("vmslan") { _ = try? Command.run("/sbin/ip", ["netns", "del", name]) }
            }
            let (_, links) = (try? Command.run("/sbin/ip", ["-o", "link", "show"])) ?? (0, "")
            for line in links.split(separator: "\n") {
                let fields = line.split(separator: " ")
                guard fields.count > 1 else { continue }
                let name = String(fields[1].split(separator: "@").first ?? "").replacingOccurrences(of: ":", with: "")
                if name.hasPrefix("vpub") || name.hasPrefix("vlan") { _ = try? Command.run("/sbin/ip", ["link", "del", name]) }
            }
        }

        /// Builds it all; waits until every server answers from the host.
        static func make() async throws -> World {
            removeLeftovers()
            let world = try World()
            do {
                try world.namespace("pub", host: "198.51.100.1", inside: "198.51.100.2")
                try world.namespace("lan", host: "10.200.0.1", inside: "10.200.0.2")
                world.loopbackPort = freePort()
                world.anyAddressPort = world.loopbackPort + 1
                try world.serve(["/usr/bin/python3", "-m", "http.server", "\(world.loopbackPort)", "--bind", "127.0.0.1", "-d", world.directory.path])
                try world.serve(["/usr/bin/python3", "-m", "http.server", "\(world.anyAddressPort)", "--bind", "0.0.0.0", "-d", world.directory.path])
                world.hostAddress = try #require(
                    Self.hostAddresses().first { !$0.hasPrefix("198.51.100.") && !$0.hasPrefix("10.200.0.") },
                    "the host has an address besides the test's own")
                for url in [
                    "http://198.51.100.2/marker", "http://10.200.0.2/marker", "http://127.0.0.1:\(world.loopbackPort)/marker",
                    "http://\(world.hostAddress):\(world.anyAddressPort)/marker",
                ] {
                    var answered = false
                    for _ in 0..<100 where !answered {
                        answered = (try? await APIClient.raw(url))?.contains("reached") == true
                        if !answered { try await Task.sleep(for: .milliseconds(100)) }
                    }
                    try #require(answered, "\(url) answers from the host")
                }
            } catch {
                world.tearDown()
                throw error
            }
            return world
        }

        /// The host's IPv4 addresses but the loopback's (as `ip -4 -o addr` lists them).
        static func hostAddresses() throws -> [String] {
            let (_, output) = try Command.run("/sbin/ip", ["-4", "-o", "addr", "show"])
            return output.split(separator: "\n").compactMap { line in
                let fields = line.split(separator: " ")
                guard let index = fields.firstIndex(of: "inet"), index + 1 < fields.count else { return nil }
                let address = String(fields[index + 1].split(separator: "/")[0])
                return address.hasPrefix("127.") ? nil : address
            }
        }

        func targets(daemonPort: Int) -> [Target] {
            [
                Target(name: "internet", host: "198.51.100.2", port: 80),
                Target(name: "private", host: "10.200.0.2", port: 80),
                Target(name: "host-loopback", host: "10.0.2.2", port: loopbackPort),
                Target(name: "daemon", host: "10.0.2.2", port: daemonPort),
                Target(name: "host-address", host: hostAddress, port: anyAddressPort),
            ]
        }
    }

    /// User-data that tries each target from inside the guest and prints `EGRESS name reached|blocked`: reached
    /// when anything answered HTTP. Each try gets 3 s and is then ended (busybox `nc` has no read timeout); the
    /// tries run side by side (a blocked target costs its 3 s once, not once per target before it), and
    /// `EGRESS done` follows the last.
    static func probeUserData(_ targets: [Target]) -> String {
        var script = """
            #!/bin/sh
            try() {
                (printf 'GET /marker HTTP/1.0\\r\\n\\r\\n'; sleep 2) | nc -w 3 "$2" "$3" >"/tmp/answer-$1" 2>/dev/null &
                pid=$!
                sleep 3
                kill "$pid" 2>/dev/null
                if grep -q HTTP/ "/tmp/answer-$1"; then echo "EGRESS $1 reached"; else echo "EGRESS $1 blocked"; fi
            }

            """
        for target in targets { script += "try \(target.name) \(target.host) \(target.port) &\n" }
        return script + "wait\necho EGRESS done\n"
    }

    /// `text` as a JSON string literal.
    static func jsonString(_ text: String) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: [text], options: [.withoutEscapingSlashes]), as: UTF8.self)
            .dropFirst().dropLast().description
    }

    /// Starts a session's guest with the probe and returns what it reached, by target name.
    static func probe(
        _ api: APIClient, id: String, token: String, state: String, targets: [Target]
    ) async throws -> [String: Bool] {
        let session = "/api/v1/sessions/\(id)"
        try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"memory":256,"disk":64}"#).status == 202)
            _ = try await log.state("open")
            let body = #"{"userData":\#(try jsonString(probeUserData(targets)))}"#
            let start = try await api.call(.POST, session + "/start", token: token, body: body)
            #expect(start.status == 202, "\(start.json)")
            _ = try await log.state("running")
        }
        let console = try Self.consoleLog(state: state, id: id)
        try await RealVMTests.waitForConsole(console, containing: "EGRESS done")
        let text = (try? String(contentsOfFile: console, encoding: .utf8)) ?? ""
        var reached: [String: Bool] = [:]
        // A line may follow the console shell's prompt.
        for line in text.split(whereSeparator: \.isNewline) {
            guard let at = line.range(of: "EGRESS ") else { continue }
            let words = line[at.upperBound...].split(separator: " ")
            guard words.count >= 2 else { continue }
            reached[String(words[0])] = words[1].hasPrefix("reached")
        }
        return reached
    }

    static func consoleLog(state: String, id: String) throws -> String { "\(state)/machines/\(id)/console.log" }

    /// Sessions of three clients, one per policy: `local` (the daemon's default, `internet`), and two web
    /// origins the admin approved with `none` and `open`.
    static func checkPolicies(_ daemon: DaemonProcess, world: World) async throws {
        let api = APIClient(port: daemon.port)
        let admin = try daemon.adminToken()
        var results: [EgressPolicyCase: [String: Bool]] = [:]
        for policy in EgressPolicyCase.allCases {
            var headers: [(String, String)] = []
            if let origin = policy.origin {
                let approve = try await api.call(
                    .POST, "/api/v1/origins/approve", token: admin, body: #"{"origin":"\#(origin)","egress":"\#(policy.rawValue)"}"#)
                #expect(approve.status == 200, "\(approve.json)")
                #expect(approve["egress"] as? String == policy.rawValue)
                headers = [("Origin", origin)]
            }
            let created = try await api.call(
                .POST, "/api/v1/sessions", body: #"{"name":"egress-\#(policy.rawValue)","secret":"s3cret-egress"}"#, headers: headers)
            let id = try #require((created["session"] as? [String: Any])?["id"] as? String, "\(created.json)")
            let token = try #require(created["token"] as? String)
            results[policy] = try await probe(
                api, id: id, token: token, state: daemon.stateDirectory, targets: world.targets(daemonPort: daemon.port))
            let view = try await api.call(.GET, "/api/v1/sessions/\(id)", token: token)
            #expect(view["egress"] as? String == policy.rawValue, "the session shows its policy")
            #expect(try await api.call(.POST, "/api/v1/sessions/\(id)/close", token: token).status == 202)
        }
        let everything = ["internet", "private", "host-loopback", "daemon", "host-address"]
        #expect(results[.internet] == ["internet": true, "private": false, "host-loopback": false, "daemon": false, "host-address": false])
        #expect(results[.none] == Dictionary(uniqueKeysWithValues: everything.map { ($0, false) }))
        #expect(results[.open] == Dictionary(uniqueKeysWithValues: everything.map { ($0, true) }))
    }

    enum EgressPolicyCase: String, CaseIterable, Sendable {
        case internet, none, open
        var origin: String? {
            switch self {
            case .internet: nil
            case .none: "https://closed.example"
            case .open: "https://trusted.example"
            }
        }
    }

    @Test("as root: under internet a guest reaches the internet and nothing of the host or the private network; none reaches nothing; open reaches all")
    func policiesAsRoot() async throws {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "build the appliance first (make appliance)")
        let world = try await World.make()
        defer { world.tearDown() }
        let directory = try TemporaryDirectory("vms-e2e-egress")
        let daemon = DaemonProcess(
            stateDirectory: directory.path + "/state", arguments: ["--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "2"])
        try await daemon.start()
        try await Self.checkPolicies(daemon, world: world)
        try await daemon.stop()
    }

    @Test("as an unprivileged user: the same walls, with the sandbox made in the user's own namespaces")
    func policiesAsUser() async throws {
        let user = try UnprivilegedUser.ensure()
        // A desktop's /dev/net/tun is world read-write (udev's default); pasta opens it as the user.
        try World.run("/bin/chmod", "0666", "/dev/net/tun")
        let world = try await World.make()
        defer { world.tearDown() }
        let directory = try TemporaryDirectory("vms-e2e-egress-user")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
        let cgroup = try TestCPUCgroup(owner: user)
        defer { cgroup.tearDown() }
        let appliance = try user.applianceDirectory(copyingInto: directory.path)
        let daemon = try user.daemon(
            in: directory.path, cgroup: cgroup.path, arguments: ["--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "2"])
        try await daemon.start()
        defer { UnprivilegedCapTests.keepLog(of: daemon, as: "user-egress") }
        try await Self.checkPolicies(daemon, world: world)
        try await daemon.stop()
    }
}
}
