#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A web page's origin as a browser sends it in the `Origin` header (`scheme://host[:port]`), checked and
/// normalized, so that approvals are keyed by exactly what browsers send.
public struct WebOrigin: Hashable, Codable, Sendable, CustomStringConvertible {
    public let value: String

    /// Parses an origin; nil for anything that is not `http(s)://host[:port]` (including the opaque `null`).
    public init?(_ text: String) {
        let lowered = text.lowercased()
        guard lowered.count <= 253 + 16 else { return nil }
        let scheme: String
        if lowered.hasPrefix("http://") { scheme = "http" } else if lowered.hasPrefix("https://") { scheme = "https" } else { return nil }
        let authority = lowered.dropFirst(scheme.count + 3)
        guard !authority.isEmpty, !authority.contains("/"), !authority.contains("@") else { return nil }
        var host = Substring(authority)
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            let port = authority[authority.index(after: colon)...]
            guard let number = UInt16(port), number > 0, port.first != "0" else { return nil }
            host = authority[..<colon]
        }
        // A host name, or an IPv6 address in brackets (`[::1]`) that really is one.
        let allowed =
            host.hasPrefix("[")
            ? host.hasSuffix("]") && Self.isIPv6(host.dropFirst().dropLast())
            : host.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || "-.".unicodeScalars.contains($0) }
        guard !host.isEmpty, allowed else { return nil }
        value = "\(scheme)://\(authority)"
    }

    public var description: String { value }

    private static func isIPv6(_ text: Substring) -> Bool {
        var address = in6_addr()
        return String(text).withCString { inet_pton(AF_INET6, $0, &address) } == 1
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let origin = WebOrigin(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a web origin"))
        }
        self = origin
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }

    /// What the user decided about an origin.
    public enum Status: String, Codable, Sendable, CaseIterable {
        case pending, approved, denied
    }
}
