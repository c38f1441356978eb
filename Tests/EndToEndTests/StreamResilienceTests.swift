import Foundation
import Testing
import VMSessionTestSupport

/// The real daemon binary (test driver) under clients that leave: event streams killed mid-event, tokens
/// revoked mid-stream, and more streams than the daemon has file descriptors.
@Suite("Event streams under clients that leave (test driver)", .serialized)
struct StreamResilienceTests {
    /// How long the churn runs; `VMSESSIOND_SOAK_SECONDS` makes it a soak of minutes.
    static var soakSeconds: Int { Int(ProcessInfo.processInfo.environment["VMSESSIOND_SOAK_SECONDS"] ?? "") ?? 15 }

    static func testDriverDaemon(_ directory: TemporaryDirectory, descriptorLimit: Int? = nil) throws -> DaemonProcess {
        let appliance = try directory.standInAppliance()
        // prlimit sets the limit (soft and hard, as `ulimit -n` would) and execs the daemon: same process.
        return DaemonProcess(
            stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default", "--appliance-dir", appliance],
            launcher: descriptorLimit.map { ["/usr/bin/prlimit", "--nofile=\($0):\($0)"] } ?? [])
    }

    @Test("event streams killed at random while the session changes never wedge the daemon")
    func killedStreamsDuringEvents() async throws {
        let directory = try TemporaryDirectory("vms-e2e-churn")
        let daemon = try Self.testDriverDaemon(directory)
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("churn")
        let open = try await api.call(.POST, "/api/v1/sessions/\(id)/open", token: token, body: #"{"memory":128,"disk":64}"#)
        let openOperation = try #require((open["operation"] as? [String: Any])?["id"] as? String)
        _ = try await api.call(.GET, "/api/v1/operations/\(openOperation)/wait?timeout=30", token: token)
        let start = try await api.call(.POST, "/api/v1/sessions/\(id)/start", token: token, body: "{}")
        let startOperation = try #require((start["operation"] as? [String: Any])?["id"] as? String)
        _ = try await api.call(.GET, "/api/v1/operations/\(startOperation)/wait?timeout=30", token: token)

        // Eight followers of the session's stream, as curl processes, one of them killed (SIGKILL, no goodbye)
        // and replaced every few milliseconds, while properties are written and the VM is paused and resumed:
        // each of those changes is an event handed to the followers.
        let url = "\(api.base)/api/v1/sessions/\(id)/events?token=\(token)"
        var followers = try (0..<8).map { _ in try Self.follow(url) }
        defer { for follower in followers where follower.isRunning { kill(follower.processIdentifier, SIGKILL) } }
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(Self.soakSeconds)
        var writes = 0
        var paused = false
        while clock.now < deadline {
            let victim = Int.random(in: 0..<followers.count)
            kill(followers[victim].processIdentifier, SIGKILL)
            followers[victim].waitUntilExit()
            followers[victim] = try Self.follow(url)
            let write = try await api.call(.PUT, "/api/v1/sessions/\(id)/properties/p\(writes % 5)", token: token, body: #"{"value":"\#(writes)"}"#)
            #expect(write.status == 200, "property write \(writes): \(write.json)")
            if writes.isMultiple(of: 10) {
                let action = paused ? "resume" : "pause"
                let reply = try await api.call(.POST, "/api/v1/sessions/\(id)/\(action)", token: token)
                #expect(reply.status == 200, "\(action): \(reply.json)")
                paused.toggle()
            }
            writes += 1
            try await Task.sleep(for: .milliseconds(Int.random(in: 0...20)))
        }
        #expect(writes > 20)
        // Still answering, and the session can still be closed.
        let close = try await api.call(.POST, "/api/v1/sessions/\(id)/close", token: token)
        #expect(close.status == 202, "\(close.json)")
        let closeOperation = try #require((close["operation"] as? [String: Any])?["id"] as? String)
        let closed = try await api.call(.GET, "/api/v1/operations/\(closeOperation)/wait?timeout=30", token: token)
        #expect(closed["status"] as? String == "succeeded", "\(closed.json)")
        // And it still stops on SIGTERM (DaemonProcess.stop fails the test if it does not within 30 s).
        try await daemon.stop()
    }

    @Test("revoking a token ends the event streams it opened, at once, and only those")
    func revocationEndsStreams() async throws {
        let directory = try TemporaryDirectory("vms-e2e-revoke")
        let daemon = try Self.testDriverDaemon(directory)
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let (id, first) = try await api.newSession("revoked", secret: "pw")
        let second = try #require(try await api.call(.POST, "/api/v1/sessions", body: #"{"name":"revoked","secret":"pw"}"#)["token"] as? String)
        let streamURL = { (token: String) in "\(api.base)/api/v1/sessions/\(id)/events?token=\(token)" }
        let byFirst = try Self.follow(streamURL(first))
        let bySecond = try Self.follow(streamURL(second))
        defer { for process in [byFirst, bySecond] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        try await Task.sleep(for: .milliseconds(500))
        #expect(byFirst.isRunning && bySecond.isRunning)

        #expect(try await api.call(.DELETE, "/api/v1/sessions/\(id)/token", token: first).status == 204)
        #expect(try await Self.exits(byFirst, within: .seconds(3)), "the revoked token's stream ended")
        #expect(bySecond.isRunning, "another token's stream goes on")

        // The admin revoking every token of the session ends the rest.
        let admin = try String(contentsOfFile: daemon.stateDirectory + "/admin-token", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let adminStream = try Self.follow("\(api.base)/api/v1/events?token=\(admin)")
        defer { if adminStream.isRunning { kill(adminStream.processIdentifier, SIGKILL) } }
        #expect(try await api.call(.DELETE, "/api/v1/sessions/\(id)/token", token: admin).status == 204)
        #expect(try await Self.exits(bySecond, within: .seconds(3)), "every token's stream ended")
        try await Task.sleep(for: .milliseconds(300))
        #expect(adminStream.isRunning, "the admin's own stream is not the session's token")
        // And the revoked tokens open nothing any more.
        #expect(try await api.call(.GET, "/api/v1/sessions/\(id)/events", token: second).status == 401)
        try await daemon.stop()
    }

    @Test("with 1024 descriptors, 1100 event streams are refused past the budget and the daemon keeps serving")
    func descriptorExhaustion() async throws {
        let directory = try TemporaryDirectory("vms-e2e-fds")
        let daemon = try Self.testDriverDaemon(directory, descriptorLimit: 1024)
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let admin = try String(contentsOfFile: daemon.stateDirectory + "/admin-token", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        // The test opens its streams with plain sockets: it needs more descriptors than the daemon has.
        RawStream.raiseDescriptorLimit(to: 4096)
        var streams: [RawStream] = []
        defer { for stream in streams { stream.close() } }
        var opened = 0
        var refused = 0
        var unanswered = 0
        for _ in 0..<1100 {
            let stream = try RawStream(port: daemon.port, path: "/api/v1/events?token=\(admin)")
            streams.append(stream)
            switch stream.status(timeout: .milliseconds(300)) {
            case 200: opened += 1
            case 429:
                // A client that is refused goes away (as curl and EventSource do), freeing its connection.
                refused += 1
                stream.close()
            default: unanswered += 1  // waiting in the listen backlog: the daemon stopped accepting
            }
        }
        #expect(opened > 500, "streams within the budget are served (opened \(opened))")
        #expect(opened < 1024 - 200, "the budget keeps a reserve of descriptors (opened \(opened))")
        #expect(refused + unanswered > 0)
        // A new request is still answered while every stream slot is taken.
        let info = try await api.call(.GET, "/api/v1")
        #expect(info.status == 200, "\(info.json)")
        let busy = try await api.call(.GET, "/api/v1/events", token: admin)
        #expect(busy.status == 429)
        #expect(busy.errorCode == "too_many_streams")
        for stream in streams { stream.close() }
        streams.removeAll()
        try await Task.sleep(for: .milliseconds(500))
        // The slots come back, and the daemon neither crashed nor wedged.
        let (id, token) = try await api.newSession("after-exhaustion")
        #expect(!id.isEmpty && !token.isEmpty)
        #expect(daemon.log().contains("connection budget"))
        try await daemon.stop()
    }

    // MARK: Helpers

    /// `curl -N` following an event stream, as a page or a script would; its output is thrown away.
    static func follow(_ url: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-sN", "--max-time", "600", url]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    static func exits(_ process: Process, within timeout: Duration) async throws -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while process.isRunning, clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        return !process.isRunning
    }
}

/// One HTTP/1.1 request on a plain blocking socket, kept open: an event stream that costs the test one
/// descriptor and no connection pool.
final class RawStream: @unchecked Sendable {
    private var socket: Int32

    init(port: Int, path: String) throws {
        socket = try Self.connect(port: port)
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\r\n"
        _ = request.withCString { send(socket, $0, strlen($0), 0) }
    }

    /// A blocking TCP socket connected to 127.0.0.1:`port` (closed again if it cannot connect).
    static func connect(port: Int) throws -> Int32 {
        let descriptor = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw DaemonError("socket() failed: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(descriptor)
            throw DaemonError("cannot connect to 127.0.0.1:\(port): errno \(errno)")
        }
        return descriptor
    }

    /// The response's status code, or nil if none came within `timeout`.
    func status(timeout: Duration) -> Int? {
        var poller = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        guard poll(&poller, 1, milliseconds) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = recv(socket, &buffer, buffer.count, 0)
        guard count > 12 else { return nil }
        let line = String(decoding: buffer[0..<count], as: UTF8.self)
        return Int(line.dropFirst(9).prefix(3))
    }

    func close() {
        if socket >= 0 { Glibc.close(socket) }
        socket = -1
    }

    deinit { close() }

    static func raiseDescriptorLimit(to wanted: Int) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        limit.rlim_cur = min(max(limit.rlim_cur, rlim_t(wanted)), limit.rlim_max)
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}
