import Crypto
import Foundation
import VMSessionCore

/// An image file opened the one safe way: by descriptor, without following a symlink at its name, without
/// blocking (a FIFO or a device never hangs the daemon), and only if it is a regular file. The checks that
/// follow (identity, SHA-256) read that descriptor, so they are about the file the daemon holds, not about
/// whatever the path names a moment later.
///
/// Images are trusted for what was verified at registration (or download): each use re-opens the file this
/// way and compares its identity (device, inode, size, modification and change time) with the one stored.
/// A file swapped for a symlink (to /etc/shadow, say), replaced by another file, or written to since is
/// refused; re-registering it is the way to trust the new content. Comparing the identity costs one
/// `fstat`, where re-hashing would read a multi-gigabyte image at every open and start; the change time
/// cannot be set back by the file's owner, so a write cannot hide. (qemu then opens the path itself; the
/// window between this check and that open is what is left, and it is that of one process start.)
final class ImageFile: Sendable {
    let path: String
    let descriptor: Int32
    let status: stat

    /// Opens `path`; `invalid_argument` naming the problem if it is not a regular file (a symlink, FIFO,
    /// device, socket or directory) or cannot be opened.
    init(_ path: String) throws(VMSessionError) {
        let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else {
            let code = errno
            if code == ELOOP {
                throw VMSessionError(.invalidArgument, "\(path) is a symbolic link; images are used only as regular files, never through a link.")
            }
            let reason = String(cString: strerror(code))
            switch code {
            case ENOENT, ENOTDIR: throw VMSessionError(.notFound, "There is no file at \(path): \(reason).")
            case EACCES, EPERM: throw VMSessionError(.notAllowed, "The daemon may not read \(path): \(reason).")
            default: throw VMSessionError(.invalidArgument, "Cannot open \(path): \(reason).")
            }
        }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw VMSessionError(.ioError, "Cannot inspect \(path): \(reason).")
        }
        guard status.st_mode & S_IFMT == S_IFREG else {
            close(descriptor)
            throw VMSessionError(
                .invalidArgument, "\(path) is not a regular file (it is a \(Self.kind(status.st_mode))); an image must be a regular file.")
        }
        self.path = path
        self.descriptor = descriptor
        self.status = status
    }

    deinit { close(descriptor) }

    var size: Int64 { Int64(status.st_size) }

    /// What the file is, as compared at each use.
    var identity: String {
        "\(status.st_dev):\(status.st_ino):\(status.st_size):\(Self.nanoseconds(status.st_mtim)):\(Self.nanoseconds(status.st_ctim))"
    }

    /// The identity now (after a long read, to see whether the file changed meanwhile).
    func currentIdentity() throws(VMSessionError) -> String {
        var now = stat()
        guard fstat(descriptor, &now) == 0 else { throw VMSessionError(.ioError, "Cannot inspect \(path).") }
        return "\(now.st_dev):\(now.st_ino):\(now.st_size):\(Self.nanoseconds(now.st_mtim)):\(Self.nanoseconds(now.st_ctim))"
    }

    /// The lowercase hex SHA-256 of the file, read through the descriptor in 1 MiB chunks.
    func sha256() throws(VMSessionError) -> String {
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: FileDigest.chunkBytes)
        var offset: off_t = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, offset) }
            if count < 0 {
                if errno == EINTR { continue }
                throw VMSessionError(.ioError, "Reading \(path) failed: \(String(cString: strerror(errno))).")
            }
            if count == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            offset += off_t(count)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Re-checks a registered or downloaded image before it is used: the same file (by identity, or by
    /// SHA-256 for records without one) as was verified. `not_trusted` if not.
    static func verify(path: String, version: String, identity: String?, sha256: String) throws(VMSessionError) {
        let file: ImageFile
        do {
            file = try ImageFile(path)
        } catch {
            throw VMSessionError(
                .notTrusted, "The file of image '\(version)' cannot be used: \(error.message) Register it again if it is right.", cause: error)
        }
        if let identity {
            guard file.identity == identity else {
                throw VMSessionError(
                    .notTrusted,
                    "The file of image '\(version)' (\(path)) was replaced or changed since it was verified; "
                        + "it is not used. Remove the image and register it again if the new file is right.")
            }
        } else {
            guard try file.sha256() == sha256 else {
                throw VMSessionError(
                    .notTrusted,
                    "The file of image '\(version)' (\(path)) no longer has the SHA-256 it was registered with; it is not used.")
            }
        }
    }

    private static func nanoseconds(_ time: timespec) -> Int { time.tv_sec * 1_000_000_000 + time.tv_nsec }

    private static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "directory"
        case S_IFCHR: "character device"
        case S_IFBLK: "block device"
        case S_IFIFO: "FIFO"
        case S_IFSOCK: "socket"
        default: "special file"
        }
    }
}
