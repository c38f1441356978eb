import Foundation

/// An identity that is a UUID, written as lowercase text on the wire and in the database. Sessions and
/// operations get distinct types so that one can never be passed where the other is meant.
public protocol UUIDIdentifier: Hashable, Codable, Sendable, CustomStringConvertible {
    var uuid: UUID { get }
    init(_ uuid: UUID)
}

extension UUIDIdentifier {
    /// Parses the textual UUID (any case); nil if it is not one.
    public init?(_ string: String) {
        guard let uuid = UUIDText.parse(string) else { return nil }
        self.init(uuid)
    }

    public var description: String { uuid.uuidString.lowercased() }

    public init(from decoder: any Decoder) throws {
        let string = try decoder.singleValueContainer().decode(String.self)
        guard let uuid = UUID(uuidString: string) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a UUID"))
        }
        self.init(uuid)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Reads a UUID's text (8-4-4-4-12 hex digits, any case) without Foundation's `UUID(uuidString:)`.
///
/// Why it exists: every request under `/api/v1/sessions/{id}` parses an id, and Foundation on Linux parses
/// with `sscanf`, which `perf` showed on the read path. This reads the 36 bytes directly and accepts exactly
/// the canonical form (no braces, blanks or signs, which `sscanf`'s `%x` would let through).
public enum UUIDText {
    public static func parse(_ text: String) -> UUID? {
        var text = text
        return text.withUTF8 { chars -> UUID? in
            guard chars.count == 36 else { return nil }
            var value: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            let parsed = withUnsafeMutableBytes(of: &value) { bytes -> Bool in
                var index = 0
                var byte = 0
                while index < 36 {
                    if index == 8 || index == 13 || index == 18 || index == 23 {
                        guard chars[index] == UInt8(ascii: "-") else { return false }
                        index += 1
                        continue
                    }
                    guard let high = digit(chars[index]), let low = digit(chars[index + 1]) else { return false }
                    bytes[byte] = high << 4 | low
                    byte += 1
                    index += 2
                }
                return true
            }
            return parsed ? UUID(uuid: value) : nil
        }
    }

    private static func digit(_ char: UInt8) -> UInt8? {
        switch char {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): char - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): char - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): char - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
