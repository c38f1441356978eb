import Foundation
import Testing
import VMSessionTestSupport

/// The real daemon binary (test driver) stopped while connections that never end by themselves are open: a
/// display viewer (a stand-in VNC socket that never speaks), a console viewer (of a log made by the test, as
/// QEMU would make it), an event stream and a proxied guest body that stalls (a stand-in guest on the session's
/// forward, `Tests/Browser/standin_guest.py`).
@Suite("Graceful shutdown within its grace (test driver)", .serialized)
struct ShutdownGraceTests {
    @Test("SIGTERM ends the daemon within its grace with a display viewer, a console viewer, an event stream and a stalled proxied body open; the console viewer gets a close frame")
    func sigtermWithOpenConnections() async throws {
        let directory = try TemporaryDirectory("vms-e2e-stop")
        let appliance = try directory.standInAppliance()
        let state = directory.path + "/state"
        let daemon = DaemonProcess(
            stateDirectory: state,
            arguments: ["--libvirt-uri", "test:///default", "--appliance-dir", appliance, "--shutdown-grace", "3"])
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("stopping")
        for (action, body) in [("open", #"{"memory":128,"disk":64}"#), ("start", "{}")] {
            let reply = try await api.call(.POST, "/api/v1/sessions/\(id)/\(action)", token: token, body: body)
            let operation = try #require((reply["operation"] as? [String: Any])?["id"] as? String, "\(action): \(reply.json)")
            let done = try await api.call(.GET, "/api/v1/operations/\(operation)/wait?timeout=30", token: token)
            #expect(done["status"] as? String == "succeeded", "\(action): \(done.json)")
        }

        let guest = try StandInGuestProcess(
            socket: try StandInGuestProcess.guestSocket(state: state, session: id),
            vnc: StandInGuestProcess.displaySocket(state: state, session: id), record: directory.path + "/guest.jsonl")
        defer { guest.stop() }
        // The daemon's probe finds the stand-in: the proxy answers.
        var answered = 0
        for _ in 0..<600 where answered != 200 {
            answered = try await api.call(.GET, "/api/v1/sessions/\(id)/guest/", token: token).status
            if answered != 200 { try await Task.sleep(for: .milliseconds(100)) }
        }
        try #require(answered == 200, "the stand-in guest answers through the proxy")

        let host = "Host: 127.0.0.1:\(daemon.port)\r\n"
        let stalled = try await HeldConnection.open(
            port: daemon.port, "GET /api/v1/sessions/\(id)/guest/stall HTTP/1.1\r\n\(host)Authorization: Bearer \(token)\r\n\r\n",
            until: "first chunk;")
        let display = try await HeldConnection.open(
            port: daemon.port,
            "GET /api/v1/sessions/\(id)/display?token=\(token) HTTP/1.1\r\n\(host)Upgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            until: "\r\n\r\n")
        let events = try await HeldConnection.open(
            port: daemon.port, "GET /api/v1/sessions/\(id)/events?token=\(token) HTTP/1.1\r\n\(host)\r\n", until: "retry:")
        // The test driver runs no QEMU: the console's log is made here, where QEMU would make it.
        #expect(FileManager.default.createFile(atPath: "\(state)/machines/\(id)/console.log", contents: Data("booted\n".utf8)))
        let console = try await HeldConnection.open(
            port: daemon.port,
            "GET /api/v1/sessions/\(id)/console?token=\(token)&mode=read HTTP/1.1\r\n\(host)Upgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            until: "\"hello\"")
        defer { for connection in [stalled, display, events, console] { connection.close() } }
        #expect(stalled.received.hasPrefix("HTTP/1.1 200"), "\(stalled.received)")
        #expect(display.received.hasPrefix("HTTP/1.1 101"), "the viewer is upgraded: \(display.received)")
        #expect(events.received.hasPrefix("HTTP/1.1 200"), "\(events.received)")
        #expect(console.received.hasPrefix("HTTP/1.1 101") && console.received.contains("\"hello\""), "\(console.received)")
        // Give the bridge time to connect to the display socket: the viewer is then a connection the server waits for.
        for _ in 0..<100 where guest.displayConnections() == 0 { try await Task.sleep(for: .milliseconds(50)) }

        let started = ContinuousClock.now
        // DaemonProcess.stop sends SIGTERM, and fails unless the daemon exits with status 0 within 30 s.
        try await daemon.stop()
        let took = ContinuousClock.now - started
        print("vmsessiond exited \(took) after SIGTERM (shutdownGrace 3 s) with a display and a console viewer, a stream and a stalled body open")
        #expect(took < .seconds(30))
        #expect(daemon.log().contains("vmsessiond stopped"), "it stopped through the graceful path")
        // A server's close frame after the history: FIN and close (0x88), a payload of at most 125 bytes. (Its
        // code is 1000: swift-websocket's own graceful-shutdown handler closes before the console's 1001 can.)
        let rest = try await console.rest()
        let closes = rest.indices.dropLast(1).filter { rest[$0] == 0x88 && rest[$0 + 1] <= 125 }
        #expect(closes.count == 1, "the console viewer got a close frame: \(rest)")
    }
}

/// `Tests/Browser/standin_guest.py` as a process: a stand-in guest API on the session's forward port and a
/// stand-in display socket, stopped (SIGTERM) by the test.
final class StandInGuestProcess: @unchecked Sendable {
    let process = Process()
    let vnc: String

    init(socket: String, vnc: String, record: String) throws {
        self.vnc = vnc
        let script = DaemonProcess.packageRoot + "/Tests/Browser/standin_guest.py"
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script, socket, "--vnc", vnc, "--record", record]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        // It says when it listens.
        let line = output.fileHandleForReading.availableData
        guard String(decoding: line, as: UTF8.self).contains("ready") else {
            throw DaemonError("the stand-in guest did not start on \(socket)")
        }
    }

    /// How many connections the display socket holds (the daemon's bridges to it), from /proc/net/unix.
    func displayConnections() -> Int {
        let table = (try? String(contentsOfFile: "/proc/net/unix", encoding: .utf8)) ?? ""
        return table.split(separator: "\n").filter { $0.hasSuffix(vnc) }.count - 1
    }

    /// SIGKILL: a test runner's threads may block SIGTERM, and a child inherits that mask.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Where the daemon reaches the session's guest API (as `LibvirtHypervisor.networkDirectory` decides; the
    /// test driver boots no guest, so the stand-in listens there), its directory made.
    static func guestSocket(state: String, session: String) throws -> String {
        let beside = "\(state)/machines/\(session)/network"
        let directory = (beside + "/net.sock").utf8.count <= 96 ? beside : "/tmp/vmsessiond-\(geteuid())/\(session).net"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory + "/api.sock"
    }

    /// Where the daemon looks for the session's VNC socket (as `LibvirtHypervisor.socketPath` decides).
    static func displaySocket(state: String, session: String) -> String {
        let beside = "\(state)/machines/\(session)/vnc.sock"
        return beside.utf8.count <= 107 ? beside : "/tmp/vmsessiond-\(geteuid())/\(session).vnc"
    }
}

/// A TCP connection to the daemon that sent a request, read until a marker, and stays open until closed:
/// a client that is there and says nothing more.
final class HeldConnection: @unchecked Sendable {
    let descriptor: Int32
    let received: String

    private init(descriptor: Int32, received: String) {
        self.descriptor = descriptor
        self.received = received
    }

    static func open(port: Int, _ request: String, until marker: String) async throws -> HeldConnection {
        try await Command.onThread {
            let descriptor = try RawStream.connect(port: port)
            var timeout = timeval(tv_sec: 30, tv_usec: 0)
            setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            _ = request.withCString { send(descriptor, $0, strlen($0), 0) }
            var received = [UInt8]()
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !String(decoding: received, as: UTF8.self).contains(marker) {
                let count = recv(descriptor, &buffer, buffer.count, 0)
                if count <= 0 { break }
                received += buffer[0..<count]
            }
            return HeldConnection(descriptor: descriptor, received: String(decoding: received, as: UTF8.self))
        }
    }

    /// What comes after the marker, until the daemon closes the connection (or 30 s pass).
    func rest() async throws -> [UInt8] {
        let descriptor = descriptor
        return try await Command.onThread {
            var received = [UInt8]()
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(descriptor, &buffer, buffer.count, 0)
                if count <= 0 { break }
                received += buffer[0..<count]
            }
            return received
        }
    }

    func close() { Glibc.close(descriptor) }
}
