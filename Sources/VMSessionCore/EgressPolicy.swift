/// What a guest may reach on the network. The guest runs code a web page chose, so the default lets it
/// reach the internet and nothing of the host it runs on or of the network around it.
///
/// - `none`: no egress at all (the daemon still reaches the guest's API).
/// - `internet`: public IPv4 addresses and DNS through the host's resolver; not the host (its loopback
///   services, its own addresses), not another session's guest, not private, shared, link-local,
///   multicast or reserved ranges.
/// - `open`: everything the host reaches, its loopback services included (QEMU's classic user network,
///   where the gateway 10.0.2.2 is the host's 127.0.0.1). Only an admin may choose it.
public enum EgressPolicy: String, Codable, Sendable, CaseIterable, Comparable {
    case none
    case internet
    case open

    /// Parses a policy as written in the configuration, `vmsessionctl` or the API.
    public static func parse(_ text: String) throws(VMSessionError) -> EgressPolicy {
        guard let policy = EgressPolicy(rawValue: text) else {
            throw VMSessionError(.invalidArgument, "The egress policy must be none, internet or open; got '\(text.prefix(32))'.")
        }
        return policy
    }

    /// Ordered from the narrowest to the widest, so that a request can only narrow what the admin allows.
    public static func < (lhs: EgressPolicy, rhs: EgressPolicy) -> Bool { lhs.rank < rhs.rank }

    private var rank: Int {
        switch self {
        case .none: 0
        case .internet: 1
        case .open: 2
        }
    }
}

/// The routing rules that carry out an ``EgressPolicy`` inside a guest's network namespace: destinations
/// made unreachable, and the one exception (DNS to the resolver forwarder) that is routed although its
/// address is in a blocked range. Pure: the hypervisor turns it into `ip route` and `ip rule` commands.
///
/// The guest's packets leave its user-mode network stack (passt) as sockets opened inside a network
/// namespace of their own, whose only way out is a second user-mode stack (pasta) in the host's namespace.
/// Routes in that namespace decide what the guest's connections may reach before any packet leaves it.
public struct GuestEgressRules: Equatable, Sendable {
    /// The namespace's side of the link to the host (pasta's tap): its address, prefix, and gateway.
    /// 10.0.2.0/24 like the guest's own network, so that under `open` the gateway 10.0.2.2 means the
    /// host's loopback, as in QEMU's user network.
    public static let namespaceAddress = "10.0.2.16"
    public static let namespacePrefix = 24
    public static let gateway = "10.0.2.2"
    /// Where DNS queries go; the host-side stack sends them to the host's own resolver.
    public static let resolver = "10.0.2.3"

    /// Destinations (IPv4 CIDR) that no connection of the guest may reach.
    public var unreachable: [String]
    /// Whether DNS (UDP and TCP port 53) to ``resolver`` is routed, although ``unreachable`` covers it.
    public var allowsDNS: Bool
    /// Whether the host-side stack maps the gateway to the host's loopback (`open` only).
    public var mapsGatewayToHost: Bool

    /// Every range that is not the public internet (RFC 6890 and friends), except the documentation
    /// ranges, which stand in for the internet in tests and examples.
    public static let nonPublicRanges = [
        "0.0.0.0/8",  // "this network"
        "10.0.0.0/8",  // private
        "100.64.0.0/10",  // shared address space (carrier-grade NAT)
        "127.0.0.0/8",  // loopback (the namespace's own; listed so that no rule can ever route it out)
        "169.254.0.0/16",  // link-local, cloud metadata services among them
        "172.16.0.0/12",  // private
        "192.0.0.0/24",  // IETF protocol assignments
        "192.168.0.0/16",  // private
        "198.18.0.0/15",  // benchmarking
        "224.0.0.0/4",  // multicast
        "240.0.0.0/4",  // reserved, and broadcast
    ]

    /// The link's own /24 is split in two halves, more specific than the kernel's link route, so that the
    /// gateway and the resolver are unreachable too (the DNS rule then lets port 53 through).
    static let linkHalves = ["10.0.2.0/25", "10.0.2.128/25"]

    /// The rules for `policy`. `hostAddresses` are the host's own IPv4 addresses: the host-side stack would
    /// connect to them from the host itself, so they are blocked whatever range they are in.
    public init(policy: EgressPolicy, hostAddresses: [String]) {
        switch policy {
        case .none:
            unreachable = ["0.0.0.0/1", "128.0.0.0/1"] + Self.linkHalves
            allowsDNS = false
            mapsGatewayToHost = false
        case .internet:
            var blocked = Self.nonPublicRanges + Self.linkHalves
            for address in hostAddresses where Self.isIPv4(address) {
                let host = address + "/32"
                if !blocked.contains(host) { blocked.append(host) }
            }
            unreachable = blocked
            allowsDNS = true
            mapsGatewayToHost = false
        case .open:
            unreachable = []
            allowsDNS = true
            mapsGatewayToHost = true
        }
    }

    /// Whether `text` is a dotted-quad IPv4 address.
    public static func isIPv4(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4
            && parts.allSatisfy { part in
                !part.isEmpty && part.count <= 3 && part.allSatisfy(\.isASCII) && part.allSatisfy(\.isNumber)
                    && (Int(part) ?? 256) <= 255
            }
    }
}
