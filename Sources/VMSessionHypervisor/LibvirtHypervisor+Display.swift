import Foundation
import VMSessionCore

/// The VM's display: QEMU's VNC server on a Unix socket beside the VM's files, and screenshots.
extension LibvirtHypervisor {
    public func displaySocket(of id: SessionID) -> String? { displaySocketPath(for: id) }

    /// `<machine directory>/vnc.sock` when that fits in `sun_path` (107 bytes), else
    /// `/tmp/vmsessiond-<uid>/<session>.vnc`: a deep state directory (a test's, a user's home) would
    /// otherwise make QEMU fail to bind. The choice depends only on the path, so it is the same after a restart.
    func displaySocketPath(for id: SessionID) -> String {
        let beside = machineDirectory(for: id) + "/vnc.sock"
        if beside.utf8.count <= DomainXML.maximumSocketPath { return beside }
        return Self.shortSocketDirectory + "/\(id).vnc"
    }

    static var shortSocketDirectory: String { "/tmp/vmsessiond-\(geteuid())" }

    /// Makes sure the socket's directory exists and is ours alone (mode 0700), and returns the socket's path.
    func prepareDisplaySocket(for id: SessionID) throws(VMSessionError) -> String {
        let path = displaySocketPath(for: id)
        let directory = (path as NSString).deletingLastPathComponent
        guard directory == Self.shortSocketDirectory else { return path }
        _ = mkdir(directory, 0o700)
        var info = stat()
        guard lstat(directory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid(),
            info.st_mode & 0o077 == 0
        else {
            throw VMSessionError(
                .ioError, "\(directory) must be a directory of the daemon's user with mode 0700, for the VMs' display sockets.")
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
