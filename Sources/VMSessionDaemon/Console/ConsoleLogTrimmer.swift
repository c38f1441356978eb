import CFileHoles
import Foundation
import Logging
import ServiceLifecycle
import VMSessionCore

/// Keeps every VM's console log within its ``ConsoleLogBound`` (`console.logBytes`) while the daemon runs,
/// whether or not anybody watches the console: every ``interval`` it frees the head of each log that grew
/// past the bound. A guest that prints without end would otherwise fill the disk, because QEMU appends to
/// the log for as long as the VM runs.
///
/// A `Service` in the daemon's group. Its file work (a stat and a `fallocate` per log) runs off the
/// cooperative pool.
public struct ConsoleLogTrimmer: Service {
    public static let interval: Duration = .seconds(10)

    let manager: SessionManager
    let bound: ConsoleLogBound
    let clock: any Clock<Duration>
    let interval: Duration
    let logger: Logger

    public init(
        manager: SessionManager, bound: ConsoleLogBound, clock: any Clock<Duration> = ContinuousClock(), interval: Duration = Self.interval,
        logger: Logger
    ) {
        self.manager = manager
        self.bound = bound
        self.clock = clock
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        // Logs that could not be trimmed: said once, not every pass, until trimming works again.
        var failing: Set<String> = []
        let bound = self.bound
        await repeatUntilShutdown(every: interval, on: clock) {
            for log in await manager.consoleLogs() {
                do {
                    let freed = try await offPool { try Self.trim(log, to: bound) }
                    failing.remove(log)
                    if freed > 0 { logger.debug("console log trimmed", metadata: ["log": "\(log)", "freedBytes": "\(freed)"]) }
                } catch {
                    if failing.insert(log).inserted {
                        logger.warning("console log cannot be trimmed", metadata: ["log": "\(log)", "why": "\(error)"])
                    }
                }
            }
        }
    }

    /// Frees the head of the log at `path` if it takes more space than `bound` allows, and returns the bytes
    /// freed on disk (0 when it was within bounds, or there is no log). Blocking file I/O.
    public static func trim(_ path: String, to bound: ConsoleLogBound) throws(VMSessionError) -> UInt64 {
        let file = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        if file < 0 {
            if errno == ENOENT { return 0 }  // not started yet, or closed meanwhile
            throw .consoleLog("open", path, errno)
        }
        defer { close(file) }
        var before = stat()
        guard fstat(file, &before) == 0 else { throw .consoleLog("stat", path, errno) }
        guard before.st_mode & S_IFMT == S_IFREG else {
            throw VMSessionError(.ioError, "The console log \(path) is not a regular file.")
        }
        guard
            let head = bound.head(
                size: UInt64(before.st_size), allocated: UInt64(before.st_blocks) * 512, blockSize: UInt64(before.st_blksize))
        else { return 0 }
        guard vms_punch_hole(file, 0, off_t(head.upperBound)) == 0 else {
            let code = errno
            if code == EOPNOTSUPP {
                throw VMSessionError(
                    .notSupported,
                    "The file system of \(path) cannot free the start of a file (fallocate PUNCH_HOLE), so this console log grows "
                        + "without bound; put the state directory on ext4, XFS, Btrfs or tmpfs.")
            }
            throw .consoleLog("free the start of", path, code)
        }
        var after = stat()
        guard fstat(file, &after) == 0 else { throw .consoleLog("stat", path, errno) }
        return UInt64(max(0, Int64(before.st_blocks) - Int64(after.st_blocks))) * 512
    }
}
