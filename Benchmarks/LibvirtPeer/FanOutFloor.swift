import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The floor of the SSE fan-out benchmark: the least a server can do for it, so that the daemon's figure is read
/// beside what this machine and the benchmark's own client cost.
///
/// Why it exists: the fan-out row (a property's PUT to its event in 1000 streams) is timed by one Python client
/// that reads all 1000 streams; at that size the client's own reading, and the kernel's 1000 socket writes per
/// event, are a large part of the latency, and nothing else in the run said how large. This server does nothing
/// but what that row needs: one thread, one poll loop, the PUT's body written as one SSE frame to every stream
/// (no persistence, no JSON, no task hops), then the PUT answered. Its p99 under the same client is the floor the
/// daemon's p99 is compared with.
///
/// It speaks only the HTTP the benchmark's client sends: `GET …/events…` (answered with an event stream) and
/// `PUT …` with a `Content-Length` body (fanned out, answered `200 {}`). It prints `listening on
/// http://127.0.0.1:PORT` and runs until killed.
struct FanOutFloor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout-floor", abstract: "A one-thread poll(2) SSE server: the floor of the fan-out benchmark.")

    final class Peer {
        var input: [UInt8] = []
        var output: [UInt8] = []
        var isStream = false
    }

    func run() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard listener >= 0 else { throw ValidationError("socket: \(errno)") }
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 4096) == 0 else { throw ValidationError("bind/listen: \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        FileHandle.standardOutput.write(Data("listening on http://127.0.0.1:\(UInt16(bigEndian: address.sin_port))\n".utf8))

        var peers: [Int32: Peer] = [:]
        func drop(_ fd: Int32) {
            close(fd)
            peers[fd] = nil
        }
        /// Writes what the peer has pending, as far as the socket takes it (the rest when poll says it can).
        func flush(_ fd: Int32, _ peer: Peer) {
            while !peer.output.isEmpty {
                let written = peer.output.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if written > 0 {
                    peer.output.removeFirst(written)
                } else if written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                    return
                } else {
                    drop(fd)
                    return
                }
            }
        }
        let headerEnd: [UInt8] = Array("\r\n\r\n".utf8)
        var buffer = [UInt8](repeating: 0, count: 65536)
        // poll(2), not epoll (which Swift's Glibc module does not export): over ~1000 descriptors one call costs
        // tens of microseconds, small beside the 1000 writes each event makes.
        var watched: [pollfd] = []
        while true {
            watched.removeAll(keepingCapacity: true)
            watched.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0))
            for (fd, peer) in peers {
                watched.append(pollfd(fd: fd, events: Int16(POLLIN) | (peer.output.isEmpty ? 0 : Int16(POLLOUT)), revents: 0))
            }
            guard Glibc.poll(&watched, nfds_t(watched.count), -1) > 0 else { continue }
            for entry in watched where entry.revents != 0 {
                let fd = entry.fd
                if fd == listener {
                    while true {
                        let client = accept(listener, nil, nil)
                        if client < 0 { break }
                        _ = fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK)
                        peers[client] = Peer()
                    }
                    continue
                }
                guard let peer = peers[fd] else { continue }
                if entry.revents & Int16(POLLOUT) != 0 { flush(fd, peer) }
                guard peers[fd] != nil, entry.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 else { continue }
                let read = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if read <= 0 {
                    if read == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) { drop(fd) }
                    continue
                }
                peer.input += buffer[0..<read]
                // Every complete request in the input: a GET opens a stream, a PUT is fanned out.
                while let end = peer.input.firstRange(of: headerEnd) {
                    let head = String(decoding: peer.input[..<end.lowerBound], as: UTF8.self)
                    var bodyLength = 0
                    for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
                        bodyLength = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                    }
                    guard peer.input.count >= end.upperBound + bodyLength else { break }
                    let body = Array(peer.input[end.upperBound..<(end.upperBound + bodyLength)])
                    peer.input.removeFirst(end.upperBound + bodyLength)
                    if head.hasPrefix("GET ") {
                        peer.isStream = true
                        peer.output += Array("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\r\nretry: 2000\n\n".utf8)
                        flush(fd, peer)
                    } else {
                        let frame = Array("event: propertyChanged\ndata: ".utf8) + body + Array("\n\n".utf8)
                        for (other, stream) in peers where stream.isStream {
                            stream.output += frame
                            flush(other, stream)
                        }
                        peer.output += Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".utf8)
                        flush(fd, peer)
                    }
                    if peers[fd] == nil { break }
                }
            }
        }
    }
}
