import Foundation
import Testing
import VMSessionCore
@testable import VMSessionHypervisor
import VMSessionTestSupport

/// The guest network's commands as one plan for the local and the remote runner, the shell text the remote one
/// sends (run here by a real `sh`), and what a remote host's check answer means.
@Suite("Guest network plan", .serialized)
struct GuestNetworkPlanTests {
    let directory = "/tmp/vms-plan/it's here"

    @Test("pasta joins the holder's namespace, writes its pid in the session's directory, forwards no port, and maps the gateway to the host only under open; as root it keeps root")
    func pastaArguments() {
        let internet = GuestNetworkPlan(directory: directory, rules: GuestEgressRules(policy: .internet, hostAddresses: ["192.0.2.7"]), runsAsRoot: false)
        let command = internet.pastaCommand(namespacePID: 4242)
        #expect(command.first == "pasta")
        #expect(command.suffix(4) == ["--userns", "/proc/4242/ns/user", "--netns", "/proc/4242/ns/net"])
        #expect(command.contains("--no-map-gw") && !command.contains("--runas"))
        #expect(zip(command, command.dropFirst()).contains { $0 == ("-P", directory + "/pasta.pid") })
        for option in ["-t", "-u", "-T", "-U"] { #expect(zip(command, command.dropFirst()).contains { $0 == (option, "none") }) }
        let open = GuestNetworkPlan(directory: directory, rules: GuestEgressRules(policy: .open, hostAddresses: []), runsAsRoot: true)
        #expect(!open.pastaArguments.contains("--no-map-gw"))
        #expect(open.pastaArguments.suffix(2) == ["--runas", "0"])
    }

    @Test("the namespace holder is detached and gets the directory, DNS, and every range the rules make unreachable, the host's own address among them")
    func namespaceCommand() {
        let rules = GuestEgressRules(policy: .internet, hostAddresses: ["192.0.2.7"])
        let command = GuestNetworkPlan(directory: directory, rules: rules, runsAsRoot: false).namespaceCommand
        #expect(Array(command.prefix(3)) == ["setsid", "--fork", "unshare"])
        #expect(command.contains(GuestNetwork.namespaceScript))
        let arguments = Array(command.drop { $0 != "vmsessiond-net" }.dropFirst())
        #expect(arguments == [directory, "dns"] + rules.unreachable)
        #expect(arguments.contains("192.0.2.7/32"))
    }

    @Test("a quoted word reaches sh as it was, quotes, spaces, dollars and newlines included")
    func quoting() throws {
        for word in ["plain", "it's", "a b", "$HOME `id` $(id)", "line\nnext", "'", ""] {
            let (status, output) = try Self.sh("printf %s " + Shell.quote(word))
            #expect(status == 0 && output == word)
        }
    }

    @Test("the remote down script ends a helper whose pid file names it and whose command line names the directory, spares a reused pid that names another program, and removes the pids and sockets")
    func downScript() throws {
        let scratch = try TemporaryDirectory("vms-plan")
        let dir = scratch.path
        let helper = try Self.spawn(["/bin/sh", "-c", "sleep 60; true", "helper", dir])  // its command line names the directory
        let stranger = try Self.spawn(["/bin/sleep", "61"])
        // Each leads a process group of its own: the helper's sleep goes with it.
        defer { for pid in [helper, stranger] { kill(-pid, SIGKILL); var status: Int32 = 0; waitpid(pid, &status, 0) } }
        try "\(helper)\n".write(toFile: dir + "/pasta.pid", atomically: true, encoding: .utf8)
        try "\(stranger)\n".write(toFile: dir + "/namespace.pid", atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: dir + "/net.sock", contents: nil)

        let (status, output) = try Self.sh(GuestNetworkPlan.downScript(directory: dir))
        #expect(status == 0, "\(output)")
        var state: Int32 = 0
        #expect(waitpid(helper, &state, 0) == helper, "the helper ended")
        #expect(kill(stranger, 0) == 0, "a pid reused by another program is spared")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)

        // Remove takes the directory, and the parent once it is empty.
        let parent = dir + "-parent"
        let session = parent + "/session"
        try FileManager.default.createDirectory(atPath: session, withIntermediateDirectories: true)
        _ = try Self.sh(GuestNetworkPlan.removeScript(directory: session, parent: parent))
        #expect(!FileManager.default.fileExists(atPath: parent))
    }

    @Test("a remote host's check: missing tools, no user namespaces or no tun say what to do; otherwise the sessions' directories go under the user's ~/.cache, or /tmp when passt's socket path would be too long there")
    func hostCheck() {
        let missing = RemoteGuestNetwork.availability(probeAnswer: "missing passt socat\n", hostName: "lab")
        guard case .unavailable(let why) = missing else { Issue.record("\(missing)"); return }
        #expect(why.contains("lab") && why.contains("passt socat") && why.contains("install"))
        #expect(RemoteGuestNetwork.availability(probeAnswer: "nouserns", hostName: "lab") != .unknown)
        if case .available = RemoteGuestNetwork.availability(probeAnswer: "notun", hostName: "lab") { Issue.record("no tun, no network") }
        #expect(
            RemoteGuestNetwork.availability(probeAnswer: "ok 1001 /home/ada\n", hostName: "lab")
                == .available(base: "/home/ada/.cache/vmsessiond-net", runsAsRoot: false))
        #expect(RemoteGuestNetwork.availability(probeAnswer: "ok 0 /root", hostName: "lab") == .available(base: "/root/.cache/vmsessiond-net", runsAsRoot: true))
        let longHome = "/home/" + String(repeating: "h", count: 40)
        #expect(
            RemoteGuestNetwork.availability(probeAnswer: "ok 1001 \(longHome)", hostName: "lab")
                == .available(base: "/tmp/vmsessiond-net-1001", runsAsRoot: false))
        #expect(RemoteGuestNetwork.availability(probeAnswer: "ok 1001 /home/a,b", hostName: "lab") == .available(base: "/tmp/vmsessiond-net-1001", runsAsRoot: false))
        if case .available = RemoteGuestNetwork.availability(probeAnswer: "sh: 1: syntax error", hostName: "lab") { Issue.record("garbage is no answer") }
    }

    static func sh(_ script: String) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script, "vmsessiond-test"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Starts `arguments` in a process group of its own.
    static func spawn(_ arguments: [String]) throws -> pid_t {
        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let result = posix_spawn(&pid, arguments[0], nil, &attributes, argv, environ)
        guard result == 0 else { throw CocoaError(.executableLoad) }
        return pid
    }
}
