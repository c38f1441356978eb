import Dispatch
import Foundation
import Synchronization
import VMSessionCore

/// Follows a file as it grows, the way `tail -f` does, with inotify: what is appended after `offset` is
/// handed to `deliver` a few milliseconds after it was written (writes close together come as one chunk),
/// and the follower costs nothing while the file is quiet.
///
/// It exists for the console: QEMU appends everything the guest prints to the console log, so the log is
/// both the console's history (it outlives daemon restarts, hibernation and restores) and its live feed,
/// and a viewer sees exactly the bytes the log holds, in order, with no gap and no repeat.
///
/// Reading happens on a dispatch queue of its own (never the cooperative pool). `deliver` and `ended` are
/// called on that queue, one at a time; after ``stop()`` at most a chunk already read is still delivered.
///
/// `@unchecked Sendable`: a dispatch source may be cancelled from any thread (its one mutable use here),
/// and everything else is immutable or behind the `Mutex`.
final class LogFollower: @unchecked Sendable {
    /// Why following ended on its own.
    enum Ending: Sendable, Equatable {
        /// The file was deleted (the session was closed and its files removed).
        case removed
        /// Reading failed.
        case failed(String)
    }

    private struct State: Sendable {
        var offset: UInt64
        var stopped = false
        /// A read is due (``coalescing`` after the first change since the last read).
        var readScheduled = false
    }

    private let path: String
    private let file: Int32
    private let notify: Int32
    private let queue: DispatchQueue
    private let source: any DispatchSourceRead
    private let state: Mutex<State>
    private let deliver: @Sendable ([UInt8]) -> Void
    private let ended: @Sendable (Ending) -> Void
    static let chunk = 64 * 1024
    /// How long after a change the file is read: what is written meanwhile comes in the same chunk. Short
    /// beside what a person notices of an echo; long beside QEMU's byte-at-a-time writes.
    static let coalescing = DispatchTimeInterval.milliseconds(5)

    /// Starts following `path` from `offset`. The watch is in place before the caller reads what came before
    /// `offset`, so no write is missed.
    init(
        path: String, from offset: UInt64, deliver: @escaping @Sendable ([UInt8]) -> Void,
        ended: @escaping @Sendable (Ending) -> Void
    ) throws(VMSessionError) {
        self.path = path
        self.deliver = deliver
        self.ended = ended
        let notify = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard notify >= 0 else { throw .consoleLog("watch", path, errno) }
        // IN_ATTRIB: an unlink changes the link count (IN_DELETE_SELF waits until every descriptor is closed).
        guard inotify_add_watch(notify, path, UInt32(IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)) >= 0 else {
            let error = errno
            close(notify)
            throw .consoleLog("watch", path, error)
        }
        let file = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard file >= 0 else {
            let error = errno
            close(notify)
            throw .consoleLog("open", path, error)
        }
        self.notify = notify
        self.file = file
        self.state = Mutex(State(offset: offset))
        queue = DispatchQueue(label: "vmsessiond.console-log")
        source = DispatchSource.makeReadSource(fileDescriptor: notify, queue: queue)
        source.setEventHandler { [weak self] in self?.changed() }
        source.setCancelHandler {
            close(notify)
            close(file)
        }
        source.resume()
        // Whatever was appended between the caller's read and the watch is read now.
        queue.async { [weak self] in self?.readToEnd() }
    }

    /// Ends following (and closes the file); safe to call more than once, from any thread.
    func stop() {
        let first = state.withLock { state in
            defer { state.stopped = true }
            return !state.stopped
        }
        if first { source.cancel() }
    }

    deinit { source.cancel() }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    private func changed() {
        // Drain the inotify events; what they say is re-read from the file itself.
        var events = [UInt8](repeating: 0, count: 4096)
        while read(notify, &events, events.count) > 0 {}
        // QEMU appends a few bytes per write, each an event: the first one schedules a read a moment later,
        // and the writes until then are read with it, as one chunk.
        let first = state.withLock { state in
            defer { state.readScheduled = true }
            return !state.readScheduled
        }
        guard first else { return }
        queue.asyncAfter(deadline: .now() + Self.coalescing) { [weak self] in
            guard let self else { return }
            state.withLock { $0.readScheduled = false }
            readToEnd()
            guard !isStopped else { return }
            var info = stat()
            if fstat(file, &info) != 0 || info.st_nlink == 0 {
                finish(.removed)
            }
        }
    }

    private func readToEnd() {
        var buffer = [UInt8](repeating: 0, count: Self.chunk)
        while !isStopped {
            let offset = state.withLock { $0.offset }
            let count = buffer.withUnsafeMutableBytes { pread(file, $0.baseAddress, Self.chunk, off_t(offset)) }
            if count < 0 {
                if errno == EINTR { continue }
                finish(.failed(String(cString: strerror(errno))))
                return
            }
            if count == 0 {
                // Shorter than where we were: the file was truncated (a new log); follow it from its start.
                var info = stat()
                if fstat(file, &info) == 0, UInt64(info.st_size) < offset {
                    state.withLock { $0.offset = 0 }
                    continue
                }
                return
            }
            state.withLock { $0.offset += UInt64(count) }
            deliver(Array(buffer[0..<count]))
        }
    }

    private func finish(_ ending: Ending) {
        let first = state.withLock { state in
            defer { state.stopped = true }
            return !state.stopped
        }
        guard first else { return }
        source.cancel()
        ended(ending)
    }

    /// The last `count` bytes of the file before `size`, read once when a console is attached.
    static func tail(of path: String, count: Int) throws(VMSessionError) -> (bytes: [UInt8], size: UInt64, complete: Bool) {
        let file = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard file >= 0 else { throw .consoleLog("open", path, errno) }
        defer { close(file) }
        var info = stat()
        guard fstat(file, &info) == 0 else { throw .consoleLog("read", path, errno) }
        let size = UInt64(info.st_size)
        let start = size > UInt64(count) ? size - UInt64(count) : 0
        var bytes = [UInt8](repeating: 0, count: Int(size - start))
        var done = 0
        while done < bytes.count {
            let read = bytes.withUnsafeMutableBytes { buffer -> Int in
                guard let base = buffer.baseAddress else { return 0 }
                return pread(file, base + done, buffer.count - done, off_t(start) + off_t(done))
            }
            if read < 0, errno == EINTR { continue }
            guard read > 0 else { break }
            done += read
        }
        return (Array(bytes[0..<done]), start + UInt64(done), start == 0)
    }
}

extension VMSessionError {
    /// A system call on a console log failed (the follower's and the trimmer's): what, where, and errno's words.
    static func consoleLog(_ what: String, _ path: String, _ code: Int32) -> VMSessionError {
        VMSessionError(.ioError, "Cannot \(what) the console log \(path): \(String(cString: strerror(code))).")
    }
}
