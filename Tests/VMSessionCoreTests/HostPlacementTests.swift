import Testing
import VMSessionCore

@Suite("Host placement")
struct HostPlacementTests {
    typealias Host = HostPlacement.Host
    static let small = Requirements(cpus: 1, memory: 256, disk: 1024, version: "appliance")

    func placed(_ hosts: [Host], _ requirements: Requirements = small, labels: [String: String] = [:]) -> String? {
        try? HostPlacement(hosts: hosts).place(requirements, labels: labels).name
    }

    func refusal(_ hosts: [Host], _ requirements: Requirements = small, labels: [String: String] = [:]) -> VMSessionError? {
        do {
            _ = try HostPlacement(hosts: hosts).place(requirements, labels: labels)
            return nil
        } catch { return error }
    }

    @Test("the host with the fewest sessions wins, whatever its free memory")
    func fewestSessionsFirst() {
        let hosts = [
            Host(name: "a", cpus: 8, freeMemory: 60_000, sessions: 3),
            Host(name: "b", cpus: 8, freeMemory: 1_000, sessions: 1),
            Host(name: "c", cpus: 8, freeMemory: 30_000, sessions: 2),
        ]
        #expect(placed(hosts) == "b")
    }

    @Test("among hosts with as few sessions, the one with the most free memory wins")
    func tiesByFreeMemory() {
        let hosts = [
            Host(name: "a", cpus: 8, freeMemory: 2_000, sessions: 1),
            Host(name: "b", cpus: 8, freeMemory: 9_000, sessions: 1),
            Host(name: "c", cpus: 8, freeMemory: 4_000, sessions: 1),
        ]
        #expect(placed(hosts) == "b")
    }

    @Test("equal sessions and memory fall to the first name, in any input order")
    func tiesByName() {
        let hosts = ["delta", "alpha", "charlie", "bravo"].map { Host(name: $0, cpus: 4, freeMemory: 4_096, sessions: 2) }
        for rotation in 0..<hosts.count {
            let rotated = Array(hosts[rotation...] + hosts[..<rotation])
            #expect(placed(rotated) == "alpha")
            #expect(placed(rotated.reversed()) == "alpha")
        }
    }

    @Test(
        "a host that cannot take the session is passed over for the next best, for each reason",
        arguments: [
            (Host(name: "a", cpus: 8, freeMemory: 8_000, reachable: false), HostPlacement.Refusal.unreachable),
            (Host(name: "a", cpus: 8, freeMemory: 8_000, draining: true), .draining),
            (Host(name: "a", cpus: 8, freeMemory: 8_000, sessions: 2, maxSessions: 2), .full(maxSessions: 2)),
            (Host(name: "a", cpus: 1, freeMemory: 8_000), .tooFewCPUs(has: 1, needs: 2)),
            (Host(name: "a", cpus: 8, freeMemory: 511), .tooLittleMemory(freeMiB: 511, needsMiB: 512)),
        ])
    func passedOver(host: Host, reason: HostPlacement.Refusal) {
        let requirements = Requirements(cpus: 2, memory: 512, disk: 1024, version: "appliance")
        // "a" would win on every key (no sessions, most memory, first name) if it could take the session.
        let other = Host(name: "b", cpus: 2, freeMemory: 512, sessions: 5)
        #expect(HostPlacement.refusal(of: host, cpus: 2, memory: 512, labels: [:]) == reason)
        #expect(placed([host, other], requirements) == "b")
        let error = refusal([host], requirements)
        #expect(error?.code == .insufficientResources)
        #expect(error?.message.contains("a \(reason)") == true, "\(String(describing: error))")
    }

    @Test("a host takes a session up to its limits exactly: the last session slot, all its CPUs, all its free memory")
    func exactFit() {
        let host = Host(name: "a", cpus: 2, freeMemory: 512, sessions: 1, maxSessions: 2)
        #expect(placed([host], Requirements(cpus: 2, memory: 512, disk: 1024, version: "appliance")) == "a")
        #expect(HostPlacement.refusal(of: host, cpus: 2, memory: 512, labels: [:]) == nil)
    }

    @Test("a host with no session limit takes any number of sessions")
    func noLimit() {
        #expect(placed([Host(name: "a", cpus: 4, freeMemory: 4_096, sessions: 10_000)]) == "a")
    }

    @Test("an origin restricted to labels gets only hosts carrying every one of them with the same value")
    func labels() {
        let hosts = [
            Host(name: "idle", labels: ["room": "lab2"], cpus: 8, freeMemory: 60_000),
            Host(name: "lab1-gpu", labels: ["room": "lab1", "gpu": "yes"], cpus: 8, freeMemory: 8_000, sessions: 4),
            Host(name: "lab1", labels: ["room": "lab1"], cpus: 8, freeMemory: 8_000, sessions: 3),
            Host(name: "bare", cpus: 8, freeMemory: 60_000),
        ]
        #expect(placed(hosts) == "bare")
        #expect(placed(hosts, labels: ["room": "lab1"]) == "lab1")
        #expect(placed(hosts, labels: ["room": "lab1", "gpu": "yes"]) == "lab1-gpu")
        #expect(placed(hosts, labels: ["room": "lab3"]) == nil)
        let refusal = HostPlacement.refusal(of: hosts[2], cpus: 1, memory: 256, labels: ["room": "lab1", "gpu": "yes"])
        #expect(refusal == .missingLabel(key: "gpu", value: "yes"))
    }

    @Test("reasons are checked in a fixed order: unreachable, draining, labels, limit, CPUs, memory")
    func reasonOrder() {
        var host = Host(
            name: "a", labels: [:], cpus: 1, freeMemory: 100, sessions: 1, maxSessions: 1, draining: true, reachable: false)
        let needs = (cpus: 2, memory: 512, labels: ["room": "lab1"])
        var seen: [HostPlacement.Refusal] = []
        while let reason = HostPlacement.refusal(of: host, cpus: needs.cpus, memory: needs.memory, labels: needs.labels) {
            seen.append(reason)
            switch reason {
            case .unreachable: host.reachable = true
            case .draining: host.draining = false
            case .missingLabel: host.labels = needs.labels
            case .full: host.maxSessions = nil
            case .tooFewCPUs: host.cpus = 2
            case .tooLittleMemory: host.freeMemory = 512
            }
        }
        #expect(seen == [
            .unreachable, .draining, .missingLabel(key: "room", value: "lab1"), .full(maxSessions: 1),
            .tooFewCPUs(has: 1, needs: 2), .tooLittleMemory(freeMiB: 100, needsMiB: 512),
        ])
    }

    @Test("when no host qualifies the error names every host's reason, in name order")
    func noHostQualifies() {
        let error = refusal([
            Host(name: "b", cpus: 8, freeMemory: 8_000, draining: true),
            Host(name: "a", cpus: 8, freeMemory: 8_000, reachable: false),
            Host(name: "c", cpus: 8, freeMemory: 100),
        ])
        #expect(error?.code == .insufficientResources)
        #expect(error?.message == "No host can take a session of 1 CPUs and 256 MiB: a unreachable; b draining; c has 100 MiB free, 256 MiB asked for.")
    }

    @Test("with no hosts at all placement is unavailable, not a lack of resources")
    func noHosts() {
        #expect(refusal([])?.code == .unavailable)
    }

    @Test("candidates are every qualifying host, best first, and placing takes the first")
    func candidatesOrder() {
        let hosts = [
            Host(name: "d", cpus: 8, freeMemory: 1_000, sessions: 0, draining: true),
            Host(name: "c", cpus: 8, freeMemory: 1_000, sessions: 1),
            Host(name: "b", cpus: 8, freeMemory: 3_000, sessions: 1),
            Host(name: "a", cpus: 8, freeMemory: 1_000, sessions: 1),
            Host(name: "e", cpus: 8, freeMemory: 500, sessions: 0),
        ]
        let placement = HostPlacement(hosts: hosts)
        #expect(placement.candidates(cpus: 1, memory: 256).map(\.name) == ["e", "b", "a", "c"])
        #expect(placement.candidates(cpus: 1, memory: 600).map(\.name) == ["b", "a", "c"])
        #expect(placed(hosts) == "e")
    }

    @Test("on random pools the chosen host is the one qualifying host no other beats, whatever the input order")
    func randomPools() throws {
        var random = SplitMix(seed: 22)
        for _ in 0..<500 {
            let hosts = (0..<Int.random(in: 1...6, using: &random)).map { index in
                Host(
                    name: "h\(index)", labels: Bool.random(using: &random) ? ["room": "lab1"] : [:],
                    cpus: Int.random(in: 1...4, using: &random), freeMemory: Int.random(in: 0...4, using: &random) * 256,
                    sessions: Int.random(in: 0...3, using: &random), maxSessions: Bool.random(using: &random) ? 3 : nil,
                    draining: Int.random(in: 0..<5, using: &random) == 0, reachable: Int.random(in: 0..<5, using: &random) != 0)
            }
            let requirements = Requirements(cpus: Int.random(in: 1...3, using: &random), memory: 256, disk: 1024, version: "v")
            let labels = Bool.random(using: &random) ? ["room": "lab1"] : [:]
            let qualifying = hosts.filter { host in
                host.reachable && !host.draining && labels.allSatisfy { host.labels[$0.key] == $0.value }
                    && host.sessions < (host.maxSessions ?? .max) && host.cpus >= requirements.cpus
                    && host.freeMemory >= requirements.memory
            }
            let chosen = placed(hosts, requirements, labels: labels)
            #expect(placed(hosts.shuffled(using: &random), requirements, labels: labels) == chosen)
            guard let chosen else {
                #expect(qualifying.isEmpty)
                continue
            }
            let winner = try #require(qualifying.first { $0.name == chosen })
            for other in qualifying where other.name != chosen {
                let beats =
                    other.sessions < winner.sessions
                    || (other.sessions == winner.sessions && other.freeMemory > winner.freeMemory)
                    || (other.sessions == winner.sessions && other.freeMemory == winner.freeMemory && other.name < winner.name)
                #expect(!beats, "\(other) beats \(winner)")
            }
        }
    }

    func required(_ hosts: [Host], on host: String, labels: [String: String] = [:]) -> Result<String, VMSessionError> {
        do throws(VMSessionError) {
            return .success(try HostPlacement(hosts: hosts).place(Self.small, labels: labels, on: host, why: "Template 'warm'").name)
        } catch { return .failure(error) }
    }

    @Test("a session from a template goes to the template's host even when another host would win, and to no other when that host cannot take it: unreachable is host_unreachable, draining, full or unlabelled is insufficient_resources, each naming the host")
    func requiredHostOnly() throws {
        let lab = Host(name: "lab", labels: ["room": "a"], cpus: 4, freeMemory: 4_000, sessions: 5)
        let idle = Host(name: "idle", cpus: 8, freeMemory: 60_000, sessions: 0)
        #expect(try required([idle, lab], on: "lab").get() == "lab", "the fewest-sessions rule does not move it")

        var lost = lab
        lost.reachable = false
        guard case .failure(let unreachable) = required([idle, lost], on: "lab") else { Issue.record("placed on a lost host"); return }
        #expect(unreachable.code == .hostUnreachable && unreachable.message.contains("'lab'") && unreachable.message.contains("Template 'warm'"))

        var draining = lab
        draining.draining = true
        var full = lab
        full.maxSessions = 5
        for (host, reason) in [(draining, "draining"), (full, "limit of 5")] {
            guard case .failure(let error) = required([idle, host], on: "lab") else { Issue.record("placed on \(reason)"); continue }
            #expect(error.code == .insufficientResources && error.message.contains("'lab'") && error.message.contains(reason), "\(error)")
        }
        guard case .failure(let labels) = required([idle, lab], on: "lab", labels: ["room": "b"]) else { Issue.record("labels ignored"); return }
        #expect(labels.code == .insufficientResources && labels.message.contains("room=b"), "\(labels)")
        guard case .failure(let gone) = required([idle], on: "lab") else { Issue.record("placed on a host the daemon lacks"); return }
        #expect(gone.code == .unavailable)
    }
}

/// A seeded generator, so that the random pools are the same on every run.
fileprivate struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
