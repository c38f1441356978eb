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

    public func guestAPIAddress(of id: SessionID) -> GuestAPIAddress? {
        if let network { return .unixSocket(network.apiSocketPath(for: id)) }
        return configuration.standInGuestAPIPort?(id).map(GuestAPIAddress.loopbackPort)
    }

    func displaySocketPath(for id: SessionID) -> String { socketPath(for: id, named: "vnc") }
    func consoleSocketPath(for id: SessionID) -> String { socketPath(for: id, named: "console") }

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

    public func screenshot(of id: SessionID) async throws(VMSessionError) -> [UInt8] {
        let shot = try await call("take a screenshot") { connection in
            guard let domain = try connection.domain(named: id.machineName) else {
                throw VMSessionError(.notFound, "Could not take a screenshot: the VM \(id.machineName) is not defined.")
            }
            return try domain.screenshot()
        }
        // Encoding a full screen takes a few milliseconds of CPU: not on the cooperative pool either.
        return try await call("encode the screenshot") { _ in try ScreenshotImage.png(from: shot.data, mimeType: shot.mimeType) }
    }
}
