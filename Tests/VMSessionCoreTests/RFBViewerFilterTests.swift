import Testing
import VMSessionCore

@Suite("What a display viewer may send to QEMU")
struct RFBViewerFilterTests {
    static let version: [UInt8] = Array("RFB 003.008\n".utf8)
    /// Version, security type None, ClientInit asking for exclusive access.
    static let handshake: [UInt8] = version + [1, 0]
    static let setPixelFormat: [UInt8] = [0, 0, 0, 0] + [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]
    static let setEncodings: [UInt8] = [2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21]
    static let updateRequest: [UInt8] = [3, 1, 0, 0, 0, 0, 2, 0x80, 1, 0x90]
    static let key: [UInt8] = [4, 1, 0, 0, 0, 0, 0, 0x61]
    static let pointer: [UInt8] = [5, 1, 0, 10, 0, 20]
    static let cutText: [UInt8] = [6, 0, 0, 0, 0, 0, 0, 5] + Array("hello".utf8)
    static let qemuKey: [UInt8] = [255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e]
    static let fence: [UInt8] = [248, 0, 0, 0, 0, 0, 0, 0, 2, 7, 7]
    static let continuous: [UInt8] = [150, 1, 0, 0, 0, 0, 2, 0x80, 1, 0x90]
    static let desktopSize: [UInt8] = [251, 0, 4, 0, 3, 0, 1, 0] + [UInt8](repeating: 0, count: 16)

    /// Feeds `input` in pieces of `size` bytes and collects what is forwarded.
    static func run(_ mode: RFBViewerFilter.Mode, _ input: [UInt8], pieces size: Int) throws(RFBViewerFilter.Refusal) -> [UInt8] {
        var filter = RFBViewerFilter(mode: mode)
        var output: [UInt8] = []
        var index = 0
        while index < input.count {
            output += try filter.filter(input[index..<min(index + size, input.count)])
            index += size
        }
        return output
    }

    @Test("every viewer is made a shared client, so none can disconnect the others")
    func clientInitForcedShared() throws {
        for mode in [RFBViewerFilter.Mode.interactive, .readOnly] {
            #expect(try Self.run(mode, Self.handshake, pieces: 100) == Self.version + [1, 1])
            #expect(try Self.run(mode, Self.version + [1, 7], pieces: 1) == Self.version + [1, 1])
        }
    }

    @Test("an RFB 3.3 viewer sends no security type: its next byte is ClientInit")
    func version33() throws {
        let old = Array("RFB 003.003\n".utf8)
        #expect(try Self.run(.readOnly, old + [0] + Self.key + Self.updateRequest, pieces: 3) == old + [1] + Self.updateRequest)
    }

    @Test("anything but an RFB 3.x greeting is refused")
    func badGreeting() {
        #expect(throws: RFBViewerFilter.Refusal.badHandshake) { try Self.run(.interactive, Array("GET / HTTP/1.1\r\n".utf8), pieces: 4) }
        #expect(throws: RFBViewerFilter.Refusal.badHandshake) { try Self.run(.readOnly, Array("RFB 003.00x\n".utf8), pieces: 12) }
    }

    @Test("an interactive viewer's input reaches QEMU unchanged")
    func interactivePassesInput() throws {
        let messages = Self.key + Self.pointer + Self.cutText + Self.qemuKey + [99, 1, 2, 3]
        #expect(try Self.run(.interactive, Self.handshake + messages, pieces: 5) == Self.version + [1, 1] + messages)
    }

    @Test("a read-only viewer's keys, pointer, clipboard and resizes are dropped, whatever the pieces its bytes come in")
    func readOnlyDropsInput() throws {
        let kept = Self.setPixelFormat + Self.setEncodings + Self.updateRequest + Self.fence + Self.continuous + Self.updateRequest
        let mixed = Self.setPixelFormat + Self.key + Self.setEncodings + Self.pointer + Self.cutText + Self.updateRequest
            + Self.qemuKey + Self.fence + Self.desktopSize + Self.continuous + [250, 0, 1, 2] + Self.updateRequest
        for size in [1, 2, 3, 7, 11, 64, 4096] {
            #expect(try Self.run(.readOnly, Self.handshake + mixed, pieces: size) == Self.version + [1, 1] + kept, "pieces of \(size)")
        }
    }

    @Test("a read-only viewer's clipboard is skipped without being buffered, and an extended-clipboard length counts as its size")
    func readOnlySkipsLargeClipboard() throws {
        let large = [6, 0, 0, 0, 0, 0x10, 0, 0] + [UInt8](repeating: 0x41, count: 1 << 20)
        #expect(try Self.run(.readOnly, Self.handshake + large + Self.updateRequest, pieces: 65536) == Self.version + [1, 1] + Self.updateRequest)
        let extended: [UInt8] = [6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfc] + [1, 2, 3, 4]  // length -4
        #expect(try Self.run(.readOnly, Self.handshake + extended + Self.updateRequest, pieces: 3) == Self.version + [1, 1] + Self.updateRequest)
    }

    @Test("a read-only viewer's message the filter cannot size ends the viewer")
    func readOnlyUnknownMessage() {
        #expect(throws: RFBViewerFilter.Refusal.unknownMessage(99)) { try Self.run(.readOnly, Self.handshake + [99, 0, 0, 0], pieces: 2) }
        #expect(throws: RFBViewerFilter.Refusal.unknownMessage(255)) { try Self.run(.readOnly, Self.handshake + [255, 9, 0, 0], pieces: 9) }
    }

    @Test("a message larger than the filter buffers is refused before it is buffered")
    func oversizedMessage() {
        // SetEncodings announcing 65535 encodings: 262 144 bytes.
        #expect(throws: RFBViewerFilter.Refusal.messageTooLarge(4 + 4 * 65535)) {
            try Self.run(.readOnly, Self.handshake + [2, 0, 0xff, 0xff], pieces: 4)
        }
        #expect(RFBViewerFilter.Refusal.messageTooLarge(1).reason.utf8.count <= 123, "fits in a close frame")
    }
}
