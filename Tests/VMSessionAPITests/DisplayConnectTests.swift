import Foundation
import NIOCore
import Testing
@testable import VMSessionAPI

/// Reaching QEMU's VNC socket when its listen queue is full: QEMU listens with a backlog of one, so viewers that
/// connect at once must not be told the display is unreachable.
@Suite("Connecting to a display whose listen queue is full")
struct DisplayConnectTests {
    /// A Unix socket listening with the smallest backlog and accepting nothing until asked.
    final class Listener: @unchecked Sendable {
        let path: String
        let fd: Int32

        init() throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("vms-vnc-\(UUID().uuidString.prefix(8)).sock").path
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            try #require(fd >= 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
            }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            try #require(bound == 0 && listen(fd, 0) == 0)
        }

        /// Connects non-blocking until the queue refuses with EAGAIN; returns the connected descriptors.
        func fillQueue() throws -> [Int32] {
            var filled: [Int32] = []
            for _ in 0..<16 {
                let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
                var address = sockaddr_un()
                address.sun_family = sa_family_t(AF_UNIX)
                withUnsafeMutableBytes(of: &address.sun_path) { raw in
                    for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
                }
                let result = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
                if result != 0 {
                    let error = errno
                    close(client)
                    try #require(error == EAGAIN, "a full queue refuses with EAGAIN, got \(error)")
                    return filled
                }
                filled.append(client)
            }
            Issue.record("the listen queue never filled")
            return filled
        }

        func acceptAll(_ count: Int) {
            for _ in 0..<count { let accepted = accept(fd, nil, nil); if accepted >= 0 { close(accepted) } }
        }

        deinit {
            close(fd)
            unlink(path)
        }
    }

    @Test("a connect that finds the display's listen queue full waits for room instead of failing")
    func fullQueueIsWaitedFor() async throws {
        let listener = try Listener()
        let queued = try listener.fillQueue()
        defer { for fd in queued { close(fd) } }
        async let channel = DisplayController.connectToDisplay(listener.path)
        try await Task.sleep(for: .milliseconds(200))
        // The display takes the queued connections; the waiting viewer gets in.
        listener.acceptAll(queued.count)
        let connected = try await channel
        try await connected.channel.close()
    }

    @Test("a socket nobody listens on fails with its own error, not a retried one")
    func missingDisplayFails() async throws {
        await #expect {
            _ = try await DisplayController.connectToDisplay("/nonexistent/vms-display.sock")
        } throws: { error in
            (error as? IOError)?.errnoCode == ENOENT
        }
    }
}
