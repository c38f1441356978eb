import Foundation
import Libvirt
import Logging
import Synchronization
import VMSessionCore

/// Brings a remote VM's serial console home: libvirt's console stream (`virDomainOpenConsole`, which works
/// over the remote protocol) relayed into a local log and a local Unix socket, the same two endpoints QEMU
/// gives a local VM (``ConsoleEndpoints``), so the daemon's console layer (history from the log, input into
/// the socket) works unchanged for a VM on another host.
///
/// One relay per running VM, attached after each start or restore (and, at the daemon's start, to VMs that
/// kept running). Each has two threads of its own, because both of their calls block for as long as the
/// console lives: one receives the guest's output and appends it to the log, one accepts the daemon's
/// connection on the socket and sends its bytes to the guest. A relay ends when its stream ends (QEMU exited:
/// stop, hibernate, remove, the guest powered off) or on ``detach(_:)``.
///
/// Known limit: output the guest writes before the relay is attached (the first moments of a boot, QEMU
/// drops a pty's output while nobody holds it) is not in the history.
final class ConsoleRelay: Sendable {
    private let relays = Mutex<[SessionID: Relay]>([:])
    private let logger: Logger

    init(logger: Logger) { self.logger = logger }

    /// Attaches a relay to the running domain of `id` unless one is attached; blocks (opens the stream).
    func attach(_ id: SessionID, domain: Domain, endpoints: ConsoleEndpoints) throws {
        if relays.withLock({ $0[id]?.isLive == true }) { return }
        // The socket's directory: the machine's (made at define), or the daemon's short one, ours alone.
        _ = mkdir((endpoints.socket as NSString).deletingLastPathComponent, 0o700)
        let relay = try Relay(id: id, stream: try domain.openConsole(), endpoints: endpoints, logger: logger) { [weak self] ended in
            self?.relays.withLock { relays in
                if relays[id] === ended { relays[id] = nil }
            }
        }
        let replaced = relays.withLock { relays in
            let old = relays[id]
            relays[id] = relay
            return old
        }
        replaced?.stop(abortingStream: true)
        relay.run()
    }

    /// Forgets the relay of `id`, if any, once its VM's process is gone (stopped, hibernated, removed): its
    /// socket closes now; its stream has ended (or ends) with QEMU, which ends its output thread.
    func detach(_ id: SessionID) {
        relays.withLock { $0.removeValue(forKey: id) }?.stop(abortingStream: false)
    }

    /// Ends every relay, their streams too (the hypervisor goes away while VMs run on).
    func detachAll() {
        for relay in relays.withLock({ relays in defer { relays = [:] }; return Array(relays.values) }) {
            relay.stop(abortingStream: true)
        }
    }

    func isAttached(_ id: SessionID) -> Bool { relays.withLock { $0[id]?.isLive == true } }

    /// One VM's relay: the stream, the log it appends to, the socket it serves.
    final class Relay: Sendable {
        let id: SessionID
        let stream: ConsoleStream
        let endpoints: ConsoleEndpoints
        let logger: Logger
        private let logFD: Int32
        private let listenFD: Int32
        private let state = Mutex<(live: Bool, client: Int32?)>((true, nil))
        private let ended: @Sendable (Relay) -> Void

        init(
            id: SessionID, stream: ConsoleStream, endpoints: ConsoleEndpoints, logger: Logger, ended: @escaping @Sendable (Relay) -> Void
        ) throws(VMSessionError) {
            self.id = id
            self.stream = stream
            self.endpoints = endpoints
            self.logger = logger
            self.ended = ended
            let logFD = open(endpoints.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard logFD >= 0 else {
                stream.abort()
                throw VMSessionError(.ioError, "Cannot open the console log \(endpoints.log): \(String(cString: strerror(errno))).")
            }
            guard let listenFD = Self.listen(on: endpoints.socket) else {
                let reason = String(cString: strerror(errno))
                close(logFD)
                stream.abort()
                throw VMSessionError(.ioError, "Cannot listen on the console socket \(endpoints.socket): \(reason).")
            }
            self.logFD = logFD
            self.listenFD = listenFD
        }

        var isLive: Bool { state.withLock { $0.live } }

        func run() {
            let output = Thread { [self] in pumpOutput() }
            output.name = "console-out-\(id)"
            output.start()
            let input = Thread { [self] in acceptInput() }
            input.name = "console-in-\(id)"
            input.start()
        }

        /// Ends the relay: the socket is shut (which wakes the input thread) and, if `abortingStream`, the
        /// stream aborted (which wakes the output thread; libvirt's remote driver does not hold the
        /// connection's lock while a receive waits, so this is safe from another thread).
        func stop(abortingStream: Bool) {
            let client: Int32?? = state.withLock { state in
                guard state.live else { return .none }
                state.live = false
                return .some(state.client)
            }
            guard let client else { return }
            if let client { shutdown(client, Int32(SHUT_RDWR)) }
            shutdown(listenFD, Int32(SHUT_RDWR))
            if abortingStream { stream.abort() }
        }

        /// Guest → log, until the stream ends.
        private func pumpOutput() {
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            while true {
                let count: Int
                do { count = try stream.receive(into: &buffer) } catch {
                    if isLive { logger.debug("console stream ended", metadata: ["session": "\(id)", "why": "\(error)"]) }
                    break
                }
                if count == 0 { break }
                var written = 0
                while written < count {
                    let result = buffer.withUnsafeBytes { write(logFD, $0.baseAddress.map { $0 + written }, count - written) }
                    guard result > 0 else { break }
                    written += result
                }
            }
            close(logFD)
            stop(abortingStream: false)
            stream.abort()  // releases the ended stream on libvirt's side; a no-op once aborted
            ended(self)
        }

        /// Socket → guest: one client at a time (the daemon's console multiplexer), until the relay stops.
        private func acceptInput() {
            defer { close(listenFD) }
            while isLive {
                let client = accept(listenFD, nil, nil)
                guard client >= 0 else {
                    if errno == EINTR { continue }
                    break
                }
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                let accepted = state.withLock { state in
                    guard state.live else { return false }
                    state.client = client
                    return true
                }
                guard accepted else {
                    close(client)
                    break
                }
                var buffer = [UInt8](repeating: 0, count: 4096)
                while true {
                    let count = buffer.withUnsafeMutableBytes { read(client, $0.baseAddress, $0.count) }
                    if count < 0 && errno == EINTR { continue }
                    guard count > 0 else { break }
                    do { try stream.send(Array(buffer.prefix(count))) } catch { break }
                }
                state.withLock { $0.client = nil }
                close(client)
            }
        }

        /// A listening Unix socket at `path` (a stale one is replaced), or nil with errno set.
        static func listen(on path: String) -> Int32? {
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
                errno = ENAMETOOLONG
                return nil
            }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return nil }
            unlink(path)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard bound == 0, chmod(path, 0o600) == 0, Glibc.listen(fd, 1) == 0 else {
                let saved = errno
                close(fd)
                errno = saved
                return nil
            }
            return fd
        }
    }
}
