import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What the compiled benchmark clients (`fanout-client`, `console-client`) share: one monotonic clock, and blocking
/// loopback TCP connections they then read in one poll loop.
///
/// Why it exists: both clients stamp what they read on CLOCK_MONOTONIC (the clock Python's `time.monotonic()`
/// reads, so that a client's stamps and the benchmark's own can be compared) and speak plain HTTP/1.1 to the daemon
/// on 127.0.0.1, with no client library between the socket and the stamp.
enum Loopback {
    /// CLOCK_MONOTONIC in nanoseconds.
    static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }

    /// A blocking TCP connection to 127.0.0.1:`port`, with Nagle off (each request leaves at once).
    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ValidationError("socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let error = errno
            close(fd)
            throw ValidationError("connect to 127.0.0.1:\(port): errno \(error)")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    /// Writes all of `bytes` (retrying on EAGAIN/EINTR); gives up silently on any other error, as a closed peer
    /// shows up in the read loop anyway.
    static func send(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress.map { $0 + offset }, $0.count - offset) }
            if written > 0 {
                offset += written
            } else if errno != EAGAIN && errno != EINTR {
                return
            }
        }
    }

    static func send(_ fd: Int32, _ text: String) { send(fd, Array(text.utf8)) }

    static func setNonBlocking(_ fd: Int32) { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
}

extension UInt8 {
    var asciiDigit: Int? { (0x30...0x39).contains(self) ? Int(self - 0x30) : nil }
}
