/// What the daemon lets through from a VNC viewer to QEMU (RFB, RFC 6143, client to server).
///
/// It exists for two promises the daemon makes about the display:
/// - **many viewers**: every viewer is made a *shared* client (the ClientInit flag is set to 1 whatever the
///   viewer sent), so that no viewer can make QEMU disconnect the others;
/// - **read-only viewers** (`?mode=read`): once the handshake is done, every message is parsed and the
///   input messages (keys, pointer, clipboard, desktop size) are dropped here, in the daemon, so a read-only
///   viewer cannot type even with a modified client. A message it cannot size ends the viewer, since the
///   rest of its stream could not be parsed.
///
/// A value with no I/O: bytes in, bytes to forward out.
public struct RFBViewerFilter: Sendable {
    public enum Mode: Sendable { case interactive, readOnly }

    /// Why a viewer's stream was refused.
    public enum Refusal: Error, Equatable, Sendable {
        case badHandshake
        case unknownMessage(UInt8)
        case messageTooLarge(Int)

        /// A close reason for the viewer (WebSocket close reasons are at most 123 bytes).
        public var reason: String {
            switch self {
            case .badHandshake: "not an RFB 3.x viewer"
            case .unknownMessage(let type): "unknown RFB message type \(type) from a read-only viewer"
            case .messageTooLarge(let size): "RFB message of \(size) bytes is too large"
            }
        }
    }

    private enum Phase: Equatable, Sendable {
        case version, security, clientInit, messages
    }

    public let mode: Mode
    private var phase = Phase.version
    /// Bytes of a message not complete yet (read-only mode, and the 12-byte version).
    private var pending: [UInt8] = []
    /// Bytes of a dropped message still to come (a clipboard's text).
    private var skipping = 0

    /// The largest message buffered whole (SetEncodings with 16 000 encodings); larger ones are refused.
    public static let maximumMessage = 64 << 10

    public init(mode: Mode) {
        self.mode = mode
    }

    /// The bytes to send on to QEMU for `input`, in order.
    public mutating func filter(_ input: some Collection<UInt8>) throws(Refusal) -> [UInt8] {
        var output: [UInt8] = []
        var rest = input[...]
        while !rest.isEmpty {
            switch phase {
            case .version:
                let take = rest.prefix(12 - pending.count)
                pending += take
                rest = rest.dropFirst(take.count)
                guard pending.count == 12 else { continue }
                // "RFB 003.00x\n"
                guard pending.starts(with: Array("RFB 003.".utf8)), pending[11] == 0x0a,
                    let minor = Int(String(decoding: pending[8..<11], as: UTF8.self))
                else { throw .badHandshake }
                output += pending
                pending = []
                // RFB 3.3 has the server choose the security type; later versions have the client pick one.
                phase = minor >= 7 ? .security : .clientInit
            case .security:
                output.append(rest.removeFirst())
                phase = .clientInit
            case .clientInit:
                rest.removeFirst()
                output.append(1)  // shared: never disconnect the other viewers
                phase = .messages
            case .messages:
                if mode == .interactive {
                    output += rest
                    rest = rest.dropFirst(rest.count)
                    continue
                }
                if skipping > 0 {
                    let count = min(skipping, rest.count)
                    skipping -= count
                    rest = rest.dropFirst(count)
                    continue
                }
                pending.append(rest.removeFirst())
                guard let size = try Self.size(of: pending) else { continue }
                if case .skip(let header, let body) = size {
                    guard pending.count == header else { continue }
                    pending = []
                    skipping = body
                    continue
                }
                guard case .whole(let length, let forward) = size else { continue }
                guard length <= Self.maximumMessage else { throw .messageTooLarge(length) }
                // Whole messages are copied in one go rather than byte by byte.
                let take = rest.prefix(length - pending.count)
                pending += take
                rest = rest.dropFirst(take.count)
                guard pending.count == length else { continue }
                if forward { output += pending }
                pending = []
            }
        }
        return output
    }

    private enum Size {
        /// A message of `length` bytes, forwarded or dropped.
        case whole(length: Int, forward: Bool)
        /// A dropped message whose header is `header` bytes and whose body (`body` bytes) is skipped unbuffered.
        case skip(header: Int, body: Int)
    }

    /// The size of the client message starting `bytes`, or nil if more bytes are needed to tell.
    private static func size(of bytes: [UInt8]) throws(Refusal) -> Size? {
        func u16(_ at: Int) -> Int { Int(bytes[at]) << 8 | Int(bytes[at + 1]) }
        func u32(_ at: Int) -> UInt32 {
            UInt32(bytes[at]) << 24 | UInt32(bytes[at + 1]) << 16 | UInt32(bytes[at + 2]) << 8 | UInt32(bytes[at + 3])
        }
        switch bytes[0] {
        case 0: return .whole(length: 20, forward: true)  // SetPixelFormat
        case 2:  // SetEncodings
            guard bytes.count >= 4 else { return nil }
            return .whole(length: 4 + 4 * u16(2), forward: true)
        case 3: return .whole(length: 10, forward: true)  // FramebufferUpdateRequest
        case 4: return .whole(length: 8, forward: false)  // KeyEvent
        case 5: return .whole(length: 6, forward: false)  // PointerEvent
        case 6:  // ClientCutText (a negative length is the extended clipboard's; its size is the absolute value)
            guard bytes.count >= 8 else { return nil }
            let length = Int32(bitPattern: u32(4))
            return .skip(header: 8, body: Int(length.magnitude))
        case 150: return .whole(length: 10, forward: true)  // EnableContinuousUpdates
        case 248:  // ClientFence
            guard bytes.count >= 9 else { return nil }
            return .whole(length: 9 + Int(bytes[8]), forward: true)
        case 250: return .whole(length: 4, forward: false)  // xvp (power control)
        case 251:  // SetDesktopSize
            guard bytes.count >= 7 else { return nil }
            return .whole(length: 8 + 16 * Int(bytes[6]), forward: false)
        case 255:  // QEMU: 0 extended key event, 1 audio
            guard bytes.count >= 4 else { return nil }
            switch bytes[1] {
            case 0: return .whole(length: 12, forward: false)
            case 1: return .whole(length: u16(2) == 2 ? 10 : 4, forward: true)
            default: throw .unknownMessage(255)
            }
        default: throw .unknownMessage(bytes[0])
        }
    }
}
