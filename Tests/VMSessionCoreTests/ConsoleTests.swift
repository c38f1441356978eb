import Foundation
import Testing
import VMSessionCore

@Suite("The console's history, input budget and messages")
struct ConsoleTests {
    let zero = TestInstant(offset: .zero)

    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test("a short history is replayed whole, from its first byte")
    func shortHistoryWhole() {
        var history = ConsoleHistory(capacity: 64)
        history.append(bytes("booted\r\n/ # "))
        history.append(bytes("echo hi"))
        #expect(history.replay == bytes("booted\r\n/ # echo hi"))
    }

    @Test("a history past its capacity keeps the newest bytes and starts at a line, never inside a character")
    func longHistoryTrimmed() {
        var history = ConsoleHistory(capacity: 16)
        for line in 0..<20 { history.append(bytes("line \(line)\n")) }
        let replay = String(decoding: history.replay, as: UTF8.self)
        #expect(replay == "line 18\nline 19\n", "the last whole lines that fit, from a line start: \(replay)")
        history.append(bytes("li"))
        #expect(String(decoding: history.replay, as: UTF8.self) == "line 19\nli", "a cut inside a line skips to the next one")
        #expect(history.count <= 16 + 16 / 4, "memory stays bounded")

        // No newline near the cut: it skips UTF-8 continuation bytes instead.
        var wide = ConsoleHistory(capacity: 5)
        wide.append(bytes("ééééé"))  // 10 bytes, two per character
        let start = wide.replay
        #expect(start.first.map { $0 & 0xC0 != 0x80 } == true, "begins on a character: \(start)")
        #expect(String(decoding: start, as: UTF8.self) == "éé")
    }

    @Test("a history begun from the log's tail is told whether that tail is everything, and cut cleanly if not")
    func historyFromTail() {
        let complete = ConsoleHistory(capacity: 100, tail: bytes("half of a line\nwhole\n"), complete: true)
        #expect(complete.replay == bytes("half of a line\nwhole\n"))
        let partial = ConsoleHistory(capacity: 100, tail: bytes("f of a line\nwhole\n"), complete: false)
        #expect(partial.replay == bytes("whole\n"), "the line cut by the tail is not shown half")
    }

    @Test("a writer may paste a burst, then type at the budget's rate; a flood is refused")
    func inputBudget() {
        var budget = ConsoleInputBudget<TestInstant>(burst: 1000, bytesPerSecond: 100)
        func take(_ count: Int, after milliseconds: Int) -> Bool {
            budget.take(count, now: zero.advanced(by: .milliseconds(milliseconds)))
        }
        #expect(take(1000, after: 0), "a paste up to the burst goes through")
        #expect(!take(1, after: 0), "nothing is left at once")
        #expect(take(50, after: 500), "half a second refills 50 bytes")
        #expect(!take(60, after: 1000), "half a second more refills 50, not 60")
        #expect(take(50, after: 1000))
        #expect(take(1000, after: 100_000), "it never holds more than the burst")
        #expect(!take(1, after: 100_000))
        #expect(!take(1001, after: 1_000_000), "a frame larger than the burst never fits")
    }

    @Test("the mode is write unless the page asks to read; anything else is named in the error")
    func modes() throws {
        #expect(try ConsoleProtocol.Mode(query: nil) == .write)
        #expect(try ConsoleProtocol.Mode(query: "read") == .read)
        #expect(try ConsoleProtocol.Mode(query: "write") == .write)
        #expect {
            _ = try ConsoleProtocol.Mode(query: "admin")
        } throws: { error in
            (error as? VMSessionError)?.code == .invalidArgument && "\(error)".contains("'admin'")
        }
    }

    @Test("every close has a WebSocket code and a reason that fits a close frame")
    func closes() {
        let closes: [ConsoleClose] = [
            .sessionClosed, .shuttingDown, .readOnly, .typingTooFast(bytesPerSecond: 32 * 1024), .tooSlow(bufferedBytes: 1 << 20),
            .revoked, .failed,
        ]
        for close in closes {
            #expect(close.reason.utf8.count <= 123, "\(close)")
            #expect([1001, 1008, 1011].contains(close.code))
        }
        #expect(ConsoleClose.readOnly.code == 1008 && ConsoleClose.sessionClosed.code == 1001)
        #expect(ConsoleClose.typingTooFast(bytesPerSecond: 32 * 1024).reason.contains("32 KiB/s"))
    }

    @Test("control messages have the wire names the contract documents")
    func controlWireNames() throws {
        let hello = String(decoding: try JSONEncoder().encode(ConsoleControl.hello(mode: .read, history: 12)), as: UTF8.self)
        #expect(hello.contains(#""type":"hello""#) && hello.contains(#""mode":"read""#) && hello.contains(#""history":12"#))
        let notice = String(decoding: try JSONEncoder().encode(ConsoleControl.notice("x")), as: UTF8.self)
        #expect(notice.contains(#""type":"notice""#) && notice.contains(#""message":"x""#) && !notice.contains("mode"))
    }
}
