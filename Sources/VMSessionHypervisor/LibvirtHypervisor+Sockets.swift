import Foundation
import VMSessionCore

/// The VM's sockets, where QEMU listens for the daemon: its VNC display and its serial console's input.
/// Both are Unix sockets in a directory only the daemon's user can enter, so no other local user (and no
/// web page) reaches them; the daemon's guards stand in front of both.
extension LibvirtHypervisor {
    public func displaySocket(of id: SessionID) -> String? { displaySocketPath(for: id) }

    public func console(of id: SessionID) -> ConsoleEndpoints? {
        ConsoleEndpoints(log: consoleLogPath(for: id), socket: consoleSocketPath(for: id))
    }

    /// The Unix socket of the guest's port 80 (see ``GuestNetwork``). On a driver that runs no QEMU, nothing
    /// listens there unless a test's stand-in guest does (or the configured stand-in port is used).
    public func guestAPIAddress(of id: SessionID) -> GuestAPIAddress? {
        if network == nil, let port = configuration.standInGuestAPIPort?(id) { return .loopbackPort(port) }
        let directory = Self.networkDirectory(stateDirectory: configuration.stateDirectory, id: id)
        return .unixSocket(directory + "/" + GuestNetwork.apiSocket)
    }

    func displaySocketPath(for id: SessionID) -> String { socketPath(for: id, named: "vnc") }
    func consoleSocketPath(for id: SessionID) -> String { socketPath(for: id, named: "console") }
    /// The guest's second serial port, through which the daemon tells a guest restored from a template that
    /// its seed changed (see ``signalSeed(_:)``).
    func seedSignalSocketPath(for id: SessionID) -> String { socketPath(for: id, named: "seed") }

    /// Tells the guest of `id` that its seed drive holds a new seed: one line on its second serial port, which
    /// the appliance's seed watch blocks on (see Contextualization/appliance/init). Best effort: a VM without
    /// that port (a template made before it existed) or a guest that does not listen still finds the seed by
    /// its slower look at the drive. Returns whether QEMU took the line (see ``writeLine(_:toUnixSocket:timeout:)``).
    @discardableResult
    func signalSeed(_ id: SessionID) async -> Bool {
        let path = seedSignalSocketPath(for: id)
        // A local socket QEMU listens on: quick, but a blocking connect, write and wait, so off the cooperative pool.
        let written = try? await call("signal the guest's new seed") { _ in Self.writeLine("seed\n", toUnixSocket: path) }
        return written ?? false
    }

    /// Connects to the Unix socket of a QEMU serial port at `path`, writes `line`, and waits (at most `timeout`)
    /// until QEMU has read all of it; false if any step fails or QEMU did not read it in time.
    ///
    /// Not write-and-close: QEMU's socket chardev reads only as many bytes as the guest's UART has room for,
    /// and drops what it has not read when it sees the client hang up (its HUP watch), so a line written and
    /// closed at once was now and then lost (a warm guest then took its seed only at its 5 s look). Half-closed
    /// instead, the connection shows QEMU no hang-up but an end of file after the line: QEMU reads the line,
    /// then the end, and closes its side, which is what this waits for.
    static func writeLine(_ line: String, toUnixSocket path: String, timeout: Duration = .milliseconds(500)) -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { return false }
        let data = Array(line.utf8)
        guard data.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == data.count,
            shutdown(fd, Int32(SHUT_WR)) == 0
        else { return false }
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let left = clock.now.duration(to: deadline)
            guard left > .zero else { return false }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000) + 1
            let ready = poll(&descriptor, 1, milliseconds)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return false }
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count == 0 { return true }  // QEMU read the line and the end of file after it, and closed.
            if count < 0 && errno != EINTR && errno != EAGAIN { return false }
            // count > 0: what the guest wrote on the port, relayed by QEMU; not ours to read.
        }
    }

    /// `<machine directory>/<name>.sock` when that fits in `sun_path` (107 bytes), else
    /// `/tmp/vmsessiond-<uid>/<session>.<name>`: a deep state directory (a test's, a user's home) would
    /// otherwise make QEMU fail to bind. The choice depends only on the path, so it is the same after a restart.
    func socketPath(for id: SessionID, named name: String) -> String {
        let beside = machineDirectory(for: id) + "/\(name).sock"
        if beside.utf8.count <= DomainXML.maximumSocketPath { return beside }
        return Self.shortSocketDirectory + "/\(id).\(name)"
    }

    static var shortSocketDirectory: String { "/tmp/vmsessiond-\(geteuid())" }

    /// Makes sure the socket's directory exists and is ours alone (mode 0700), and returns the socket's path.
    func prepareSocket(_ path: String) throws(VMSessionError) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        guard directory == Self.shortSocketDirectory else { return path }
        _ = mkdir(directory, 0o700)
        var info = stat()
        guard lstat(directory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid(),
            info.st_mode & 0o077 == 0
        else {
            throw VMSessionError(
                .ioError, "\(directory) must be a directory of the daemon's user with mode 0700, for the VMs' sockets.")
        }
        return path
    }

    public func screenshot(of id: SessionID) async throws(VMSessionError) -> [UInt8] { try await screenshotPNG(of: id) }
}
