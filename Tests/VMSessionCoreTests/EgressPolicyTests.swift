import Testing
import VMSessionCore

/// The routes that carry out each egress policy, checked as a guest's connection would meet them: the most
/// specific matching route decides (the namespace's own link route is 10.0.2.0/24, its default goes out).
@Suite("Egress policy")
struct EgressPolicyTests {
    /// Whether a connection from the namespace to `address` leaves it under `rules` (port 80, or 53 for DNS).
    static func leaves(_ address: String, port: Int = 80, under rules: GuestEgressRules) -> Bool {
        if rules.allowsDNS && address == GuestEgressRules.resolver && port == 53 { return true }
        let link = ("10.0.2.0", 24)
        var best: (prefix: Int, blocked: Bool) = (0, false)  // the default route
        if contains(link.0, link.1, address) { best = (24, false) }
        for cidr in rules.unreachable {
            let parts = cidr.split(separator: "/")
            let prefix = Int(parts[1]) ?? 0
            if contains(String(parts[0]), prefix, address), prefix >= best.prefix { best = (prefix, true) }
        }
        return !best.blocked
    }

    static func value(_ address: String) -> UInt32 {
        address.split(separator: ".").reduce(0) { $0 << 8 | (UInt32($1) ?? 0) }
    }

    static func contains(_ network: String, _ prefix: Int, _ address: String) -> Bool {
        let mask: UInt32 = prefix == 0 ? 0 : ~0 << (32 - prefix)
        return value(network) & mask == value(address) & mask
    }

    let host = ["192.0.2.2", "203.0.113.7"]

    @Test("internet: public addresses and DNS leave; the host, its gateway, private, shared, link-local and multicast ranges do not")
    func internet() {
        let rules = GuestEgressRules(policy: .internet, hostAddresses: host)
        for reachable in ["198.51.100.2", "8.8.8.8", "1.1.1.1", "151.101.1.69"] {
            #expect(Self.leaves(reachable, under: rules), "\(reachable)")
        }
        for blocked in [
            "10.0.2.2", "10.0.2.3", "10.0.2.15", "10.200.0.2", "172.16.5.1", "192.168.1.1", "100.64.0.1", "169.254.169.254",
            "127.0.0.1", "224.0.0.1", "255.255.255.255", "0.0.0.1", "192.0.2.2", "203.0.113.7",
        ] {
            #expect(!Self.leaves(blocked, under: rules), "\(blocked)")
        }
        #expect(Self.leaves(GuestEgressRules.resolver, port: 53, under: rules), "DNS goes to the host's resolver")
        #expect(!rules.mapsGatewayToHost)
    }

    @Test("none: nothing leaves, not even DNS")
    func none() {
        let rules = GuestEgressRules(policy: .none, hostAddresses: host)
        for address in ["198.51.100.2", "8.8.8.8", "10.0.2.2", "10.0.2.3", "192.168.1.1", "203.0.113.7"] {
            #expect(!Self.leaves(address, under: rules), "\(address)")
        }
        #expect(!Self.leaves(GuestEgressRules.resolver, port: 53, under: rules))
        #expect(!rules.mapsGatewayToHost)
    }

    @Test("open: everything leaves, and the gateway is the host's loopback")
    func open() {
        let rules = GuestEgressRules(policy: .open, hostAddresses: host)
        #expect(rules.unreachable.isEmpty)
        #expect(rules.mapsGatewayToHost)
        #expect(Self.leaves("10.0.2.2", under: rules))
    }

    @Test("host addresses that are not IPv4 are ignored, and none is blocked twice")
    func hostAddressesAreChecked() {
        let rules = GuestEgressRules(policy: .internet, hostAddresses: ["fe80::1", "999.1.1.1", "1.2.3", "203.0.113.7", "203.0.113.7"])
        #expect(rules.unreachable.filter { $0 == "203.0.113.7/32" }.count == 1)
        #expect(!rules.unreachable.contains { $0.contains(":") || $0.hasPrefix("999") || $0 == "1.2.3/32" })
    }

    @Test("policies parse from their names only, and are ordered from the narrowest")
    func parsing() throws {
        #expect(try EgressPolicy.parse("internet") == .internet)
        #expect(throws: VMSessionError.self) { try EgressPolicy.parse("everything") }
        #expect(EgressPolicy.none < .internet && EgressPolicy.internet < .open)
    }
}
