/// The last bytes a VM wrote to its serial console, replayed to every viewer that connects, so that a page
/// opened late sees what the guest printed before it (cloud-console's history buffer).
///
/// A value with no I/O. It holds at most ``capacity`` bytes; older bytes fall off the front. What
/// ``replay`` hands out starts at a clean place: never inside a UTF-8 character, and, once bytes have
/// fallen off, at the start of a line when one begins near the cut, so that a viewer's terminal does not
/// begin with half an escape sequence or half a line.
public struct ConsoleHistory: Sendable, Equatable {
    /// The most bytes kept (`console.historyBytes`).
    public let capacity: Int
    /// How far past the cut ``replay`` looks for a line start before it gives up and starts mid-line.
    public static let lineSearch = 4096

    private var bytes: [UInt8] = []
    /// Whether the first byte kept begins a line: true at the console's very start, and after a cut that
    /// fell just after a newline; unknown (false) for a tail whose start was not seen.
    private var startsAtLine = true

    public init(capacity: Int) {
        precondition(capacity > 0, "a console history holds at least one byte")
        self.capacity = capacity
    }

    /// A history that begins with the tail of what was written before (the console log on disk).
    /// `complete` says whether `tail` is everything the console ever printed.
    public init(capacity: Int, tail: some Collection<UInt8>, complete: Bool) {
        self.init(capacity: capacity)
        startsAtLine = complete
        append(tail)
    }

    public var count: Int { bytes.count }

    /// Adds output. Trimming is done in slices of a quarter of the capacity, so each byte is moved O(1) times.
    public mutating func append(_ output: some Collection<UInt8>) {
        bytes.append(contentsOf: output)
        if bytes.count > capacity + capacity / 4 {
            let cut = bytes.count - capacity
            startsAtLine = bytes[cut - 1] == UInt8(ascii: "\n")
            bytes.removeFirst(cut)
        }
    }

    /// What a new viewer is sent: at most ``capacity`` bytes, from a clean starting place.
    public var replay: [UInt8] {
        var start = max(0, bytes.count - capacity)
        let atLine = start > 0 ? bytes[start - 1] == UInt8(ascii: "\n") : startsAtLine
        if !atLine {
            if let newline = bytes[start..<min(bytes.count, start + Self.lineSearch)].firstIndex(of: UInt8(ascii: "\n")) {
                start = newline + 1
            } else {
                // No line start near the cut: at least do not begin inside a UTF-8 character.
                while start < bytes.count, bytes[start] & 0xC0 == 0x80 { start += 1 }
            }
        }
        return Array(bytes[start...])
    }
}
