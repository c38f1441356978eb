import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A connected Unix stream socket, for tests that talk to a socket the daemon or QEMU listens on (a console
/// relay, a VNC server, a seed-signal port) the way the daemon itself does. The caller closes the descriptor.
enum UnixSocketClient {
    static func connect(to path: String, _ comment: @autoclosure () -> Comment = "something listens there") throws -> Int32 {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        try #require(bytes.count < MemoryLayout.size(ofValue: address.sun_path), "a Unix socket path fits in sun_path: \(path)")
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            Issue.record("connect to \(path): \(String(cString: strerror(errno))); \(comment())")
            throw POSIXError(.ECONNREFUSED)
        }
        return fd
    }
}
