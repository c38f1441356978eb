import Foundation
import Testing
import VMSessionCore

@testable import VMSessionHypervisor

#if canImport(Glibc)
    import Glibc
#endif

/// The guest network's API relay (the daemon's Unix socket → socat → passt's forward to the guest's port 80)
/// against the real passt, pasta and socat, with a peer on passt's VM socket that never answers: a guest
/// still booting.
@Suite("Guest API relay on the real passt")
struct GuestAPIRelayTests {
    @Test("a guest-API connection the daemon ends before the guest answered passt's handshake leaves passt idle (Debian 12's passt spun a core on a half-closed one, through every boot)")
    func endedConnectionLeavesPasstIdle() async throws {
        // passt takes a socket path of at most 96 bytes: a short directory of our own.
        let directory = "/tmp/vms-relay-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let network = GuestNetwork(directory: { _ in directory })
        let id = SessionID()
        try network.prepare(id, policy: EgressPolicy.none)
        try await network.up(id)
        defer { network.down(id) }

        // The "VM": connected to passt's socket, reading and dropping every frame, answering none.
        // The reader closes the socket once its read ends (shut down below), so the descriptor's number cannot
        // be reused by a test running beside this one while the reader still reads from it.
        let vm = try EmbeddedDriverTests.connect(unixSocket: network.netSocketPath(for: id))
        let drain = Thread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while buffer.withUnsafeMutableBytes({ read(vm, $0.baseAddress, $0.count) }) > 0 {}
            close(vm)
        }
        drain.start()
        defer { shutdown(vm, Int32(SHUT_RDWR)) }
        // The namespace's script ends by becoming passt.
        let pidText = try String(contentsOfFile: directory + "/" + GuestNetwork.namespacePIDFile, encoding: .utf8)
        let passt = try #require(Int32(pidText.filter(\.isNumber)))
        try await Task.sleep(for: .milliseconds(300))
        #expect(try String(contentsOfFile: "/proc/\(passt)/comm", encoding: .utf8).hasPrefix("passt"))

        // A probe: the request goes in, no answer comes (the guest never completes passt's handshake), and
        // the daemon gives up and closes its end.
        let probe = try EmbeddedDriverTests.connect(unixSocket: network.apiSocketPath(for: id))
        let request = Array("GET / HTTP/1.1\r\nHost: guest\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { write(probe, $0.baseAddress, $0.count) }
        try await Task.sleep(for: .milliseconds(300))
        close(probe)
        // socat waits 0.5 s for the guest's side before it ends the connection.
        try await Task.sleep(for: .seconds(1))
        let before = try Self.cpuSeconds(passt)
        try await Task.sleep(for: .seconds(2))
        let used = try Self.cpuSeconds(passt) - before
        // Spinning, passt used a whole core (2 s here, 1 s or more on a loaded machine); idle, nothing.
        #expect(used < 0.5, "passt used \(used) s of CPU in 2 s after the connection ended")
    }

    /// User and system CPU of `pid`, from /proc (clock ticks of 1/100 s).
    static func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the command's closing parenthesis: state is the 3rd field, utime the 14th, stime the 15th.
        let fields = try #require(stat.split(separator: ")").last).split(separator: " ")
        let utime = try #require(Double(fields[11])), stime = try #require(Double(fields[12]))
        return (utime + stime) / 100
    }
}
