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
/// kept running). Its stream is non-blocking and makes no call of its own while the guest is silent: a
/// remote connection takes one call at a time (``HostConnection``), and a read that waits for the guest would
/// hold every other call of the host. The guest's output is taken, as it arrives, by a handler on libvirt's
/// event loop (a non-blocking read of what the client already received) and appended to the log. Input: one
/// thread of the relay's own accepts the daemon's connection on the socket and hands what it reads to the
/// connection's queue as a send. Opening the stream and ending it are calls on that queue too. A relay ends
/// when its stream ends (QEMU exited: stop, hibernate, remove, the guest powered off; or the connection was
/// lost) or on ``detach(_:)``.
///
/// Known limit: output the guest writes before the relay is attached (the first moments of a boot, QEMU
/// drops a pty's output while nobody holds it) is not in the history.
final class ConsoleRelay: Sendable {
    private let relays = Mutex<[SessionID: Relay]>([:])
    /// The connection's queue: where the relay's calls (open, send, abort) run.
    private let queue: DispatchQueue
    private let logger: Logger

    init(queue: DispatchQueue, logger: Logger) {
        self.queue = queue
        self.logger = logger
    }

    /// Attaches a relay to the running domain of `id` unless one is attached. Makes calls: run it on the queue.
    func attach(_ id: SessionID, domain: Domain, endpoints: ConsoleEndpoints) throws {
        dispatchPrecondition(condition: .onQueue(queue))
        if relays.withLock({ $0[id]?.isLive == true }) { return }
        // The socket's directory: the machine's (made at define), or the daemon's short one, ours alone.
        _ = mkdir((endpoints.socket as NSString).deletingLastPathComponent, 0o700)
        let relay = try Relay(id: id, stream: try domain.openConsole(), endpoints: endpoints, queue: queue, logger: logger) { [weak self] ended in
            self?.relays.withLock { relays in
                if relays[id] === ended { relays[id] = nil }
            }
        }
        let replaced = relays.withLock { relays in
            let old = relays[id]
            relays[id] = relay
            return old
        }
        replaced?.stop()
        try relay.run()
    }

    /// Forgets the relay of `id`, if any, once its VM's process is gone (stopped, hibernated, removed): its
    /// socket closes now, its stream is ended on the queue.
    func detach(_ id: SessionID) {
        relays.withLock { $0.removeValue(forKey: id) }?.stop()
    }

    /// Ends every relay (the hypervisor goes away while VMs run on).
    func detachAll() {
        for relay in relays.withLock({ relays in defer { relays = [:] }; return Array(relays.values) }) {
            relay.stop()
        }
    }

    func isAttached(_ id: SessionID) -> Bool { relays.withLock { $0[id]?.isLive == true } }

    /// One VM's relay: the stream, the log it appends to, the socket it serves.
    final class Relay: Sendable {
        let id: SessionID
        let stream: ConsoleStream
        let endpoints: ConsoleEndpoints
        let queue: DispatchQueue
        let logger: Logger
        private let listenFD: Int32
        /// Whether it runs, the daemon's connection on the socket, and the log (nil once closed): the handler
        /// on libvirt's event loop writes to it, ``stop()`` closes it.
        private let state: Mutex<(live: Bool, client: Int32?, log: Int32?)>
        private let ended: @Sendable (Relay) -> Void

        init(
            id: SessionID, stream: ConsoleStream, endpoints: ConsoleEndpoints, queue: DispatchQueue, logger: Logger,
            ended: @escaping @Sendable (Relay) -> Void
        ) throws(VMSessionError) {
            self.id = id
            self.stream = stream
            self.endpoints = endpoints
            self.queue = queue
            self.logger = logger
            self.ended = ended
            let logFD = open(endpoints.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard logFD >= 0 else {
                stream.abort()  // on the queue: attach runs there
                throw VMSessionError(.ioError, "Cannot open the console log \(endpoints.log): \(String(cString: strerror(errno))).")
            }
            guard let listenFD = Self.listen(on: endpoints.socket) else {
                let reason = String(cString: strerror(errno))
                close(logFD)
                stream.abort()
                throw VMSessionError(.ioError, "Cannot listen on the console socket \(endpoints.socket): \(reason).")
            }
            self.listenFD = listenFD
            state = Mutex((true, nil, logFD))
        }

        var isLive: Bool { state.withLock { $0.live } }

        /// Starts following the stream's output (on the queue, as attach is) and the socket's input.
        func run() throws {
            do {
                try stream.onEvents { [weak self] in self?.pumpOutput() }
            } catch {
                stop()
                throw error
            }
            let input = Thread { [self] in acceptInput() }
            input.name = "console-in-\(id)"
            input.start()
            // Bytes that arrived before the handler was registered.
            pumpOutput()
        }

        /// Ends the relay once: the socket is shut (which wakes the input thread), the log closed, the stream's
        /// handler removed and the stream ended on the queue. Any thread.
        func stop() {
            let closing: (client: Int32?, log: Int32?)? = state.withLock { state in
                guard state.live else { return nil }
                state.live = false
                defer { state.log = nil }
                return (state.client, state.log)
            }
            guard let closing else { return }
            if let client = closing.client { shutdown(client, Int32(SHUT_RDWR)) }
            shutdown(listenFD, Int32(SHUT_RDWR))
            if let log = closing.log { close(log) }
            stream.removeEventHandler()
            let stream = stream
            queue.async { stream.abort() }
            ended(self)
        }

        /// Guest → log: what libvirt has received, without waiting (on libvirt's event loop thread; once on the
        /// queue, at the start, for bytes that came before the handler). Read and written under the lock, so two
        /// readers keep the bytes in order and ``stop()`` cannot close the log while it is written to.
        private func pumpOutput() {
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            while true {
                let outcome = state.withLock { state -> Result<ConsoleStream.Received, LibvirtError>? in
                    guard let log = state.log else { return nil }
                    let received: ConsoleStream.Received
                    do throws(LibvirtError) {
                        received = try stream.receiveAvailable(into: &buffer)
                    } catch {
                        return .failure(error)
                    }
                    if case .bytes(let count) = received {
                        var written = 0
                        while written < count {
                            let result = buffer.withUnsafeBytes { write(log, $0.baseAddress.map { $0 + written }, count - written) }
                            guard result > 0 else { break }
                            written += result
                        }
                    }
                    return .success(received)
                }
                switch outcome {
                case .none, .success(.nothingYet): return
                case .success(.bytes): continue
                case .success(.ended):
                    stop()
                    return
                case .failure(let error):
                    logger.debug("console stream failed", metadata: ["session": "\(id)", "why": "\(error)"])
                    stop()
                    return
                }
            }
        }

        /// Socket → guest: one client at a time (the daemon's console multiplexer), until the relay stops. Each
        /// read is sent as a call on the connection's queue.
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
                reading: while true {
                    let count = buffer.withUnsafeMutableBytes { read(client, $0.baseAddress, $0.count) }
                    if count < 0 && errno == EINTR { continue }
                    guard count > 0 else { break }
                    var offset = 0
                    while offset < count {
                        guard isLive else { break reading }
                        let chunk = buffer[offset..<count]
                        let stream = stream
                        let sent: Int? = queue.sync { try? stream.send(chunk) }
                        guard let sent else { break reading }
                        if sent == 0 { usleep(10_000) }  // the stream is full for now
                        offset += sent
                    }
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
