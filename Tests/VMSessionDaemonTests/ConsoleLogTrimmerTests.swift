import Foundation
import Logging
import NIOCore
import Testing
import VMSessionCore
import VMSessionHypervisor
@testable import VMSessionDaemon

/// The console log's bound on a real file on this machine's file system, appended to with `O_APPEND` as
/// QEMU appends to it (`logappend=on`), while the daemon frees its head. (A real guest's log is bounded in
/// Tests/Browser/test_console.py.)
@Suite("Console log bound")
struct ConsoleLogTrimmerTests {
    /// A log in a fresh directory with QEMU's kind of descriptor on it; removed at the end.
    final class Log: Sendable {
        let directory: String
        let path: String
        let descriptor: Int32

        init() throws {
            directory = "/tmp/vms-console-log-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            path = directory + "/console.log"
            descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            try #require(descriptor >= 0, "the log opens: \(String(cString: strerror(errno)))")
        }

        func append(_ text: String) {
            var bytes = Array(text.utf8)
            #expect(write(descriptor, &bytes, bytes.count) == bytes.count)
        }

        var status: stat {
            var info = stat()
            _ = stat(path, &info)
            return info
        }

        var allocated: UInt64 { UInt64(status.st_blocks) * 512 }

        func bytes(at offset: Int, count: Int) throws -> [UInt8] {
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            try handle.seek(toOffset: UInt64(offset))
            return Array(try handle.read(upToCount: count) ?? Data())
        }

        deinit {
            close(descriptor)
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    static func lines(_ range: Range<Int>) -> String { range.map { "line \($0)\n" }.joined() }

    @Test("a log past its bound keeps its newest bytes, its size and its offsets, while a writer appending meanwhile loses nothing")
    func trimsWhileTheGuestWrites() async throws {
        let log = try Log()
        let bound = ConsoleLogBound(keepBytes: 256 * 1024)
        // The guest: 400,000 lines (about 5 MiB), in writes of 1,000 lines, on a thread of its own.
        let writer = Thread {
            for start in stride(from: 0, to: 400_000, by: 1000) { log.append(Self.lines(start..<start + 1000)) }
        }
        writer.start()
        var freed: UInt64 = 0
        while !writer.isFinished {
            freed += try ConsoleLogTrimmer.trim(log.path, to: bound)
            try await Task.sleep(for: .milliseconds(1))
        }
        freed += try ConsoleLogTrimmer.trim(log.path, to: bound)

        let everything = Array(Self.lines(0..<400_000).utf8)
        #expect(log.status.st_size == everything.count, "the size (and so every offset) is what was written")
        #expect(freed > UInt64(everything.count) * 3 / 4, "most of it was freed (\(freed) of \(everything.count))")
        #expect(log.allocated <= bound.keepBytes + bound.slackBytes, "what stays on disk is bounded (\(log.allocated))")
        let kept = Int(bound.keepBytes)
        #expect(
            try log.bytes(at: everything.count - kept, count: kept) == Array(everything.suffix(kept)),
            "the newest bytes are exactly what the guest wrote last")
        #expect(try log.bytes(at: 0, count: 4096) == [UInt8](repeating: 0, count: 4096), "the head is a hole: it reads as zeros")
    }

    @Test("a console attached to a trimmed log replays clean history and follows what is appended after")
    func consoleOnATrimmedLog() async throws {
        let log = try Log()
        log.append(Self.lines(0..<200_000))
        #expect(try ConsoleLogTrimmer.trim(log.path, to: ConsoleLogBound(keepBytes: 64 * 1024)) > 0)
        let console = try ConsoleMultiplexer(
            session: SessionID(), endpoints: ConsoleEndpoints(log: log.path, socket: log.directory + "/console.sock"),
            limits: .init(historyBytes: 16 * 1024, viewerBufferBytes: 1 << 20, viewers: 4, inputBurst: 1024, inputBytesPerSecond: 1024),
            framing: .tagged, logger: Logger(label: "test"))
        defer { console.end(.sessionClosed) }
        let client = try await ConsoleMultiplexerTests.Client(try #require(console.join(.read)))
        let history = String(decoding: client.viewer.history, as: UTF8.self)
        #expect(!history.contains("\0") && history.hasPrefix("line ") && history.hasSuffix("line 199999\n"), "\(history.prefix(40))")
        log.append("after the trim\n")
        try await ConsoleMultiplexerTests.eventually("the line after the trim") { client.live.contains("\n") }
        #expect(client.live == "after the trim\n")
        #expect(client.text == history + "after the trim\n", "the client was written the same history")
    }

    @Test("a log within its bound, or not there yet, is left as it is")
    func leavesSmallLogsAlone() throws {
        let log = try Log()
        log.append(Self.lines(0..<1000))
        let before = try log.bytes(at: 0, count: 1 << 20)
        #expect(try ConsoleLogTrimmer.trim(log.path, to: ConsoleLogBound(keepBytes: 64 * 1024)) == 0)
        #expect(try log.bytes(at: 0, count: 1 << 20) == before)
        #expect(try ConsoleLogTrimmer.trim(log.directory + "/none.log", to: ConsoleLogBound(keepBytes: 64 * 1024)) == 0)
    }

    @Test("something other than a regular file where the log should be is an error that names it")
    func refusesWhatIsNotAFile() throws {
        let log = try Log()
        let fifo = log.directory + "/fifo.log"
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(throws: VMSessionError.self) { try ConsoleLogTrimmer.trim(fifo, to: ConsoleLogBound(keepBytes: 64 * 1024)) }
    }
}
