import Foundation
import Testing
import VMSessionCore

@Suite("A remote host's link")
struct HostLinkTests {
    static let start = Date(timeIntervalSince1970: 1_000_000)
    static let backoff = HostLink.Backoff(first: .milliseconds(500), maximum: .seconds(10), stableAfter: .seconds(30))

    func at(_ seconds: Double) -> Date { Self.start.addingTimeInterval(seconds) }

    @Test("the delay doubles from the first after each failure in a row and stops at the maximum")
    func backoffDoublesUpToMaximum() {
        let delays = (1...8).map { Self.backoff.delay(afterFailures: $0) }
        #expect(delays == [
            .milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(10), .seconds(10), .seconds(10),
        ])
    }

    @Test("a first attempt that connects is watched, and the host is connected since then")
    func firstConnectionIsWatched() {
        var link = HostLink(backoff: Self.backoff, now: at(0))
        #expect(link.stateName == "connecting")
        #expect(link.handle(.connected(at: at(1))) == .watch)
        #expect(link.state == .connected(since: at(1)))
    }

    @Test("failed attempts are retried later and later, and the host stays unreachable since the first failure, with the last reason")
    func failuresBackOffAndKeepTheFirstTime() {
        var link = HostLink(backoff: Self.backoff, now: at(0))
        #expect(link.handle(.failed(at: at(1), reason: "refused")) == .retry(after: .milliseconds(500)))
        #expect(link.handle(.failed(at: at(2), reason: "timed out")) == .retry(after: .seconds(1)))
        #expect(link.handle(.failed(at: at(4), reason: "no route")) == .retry(after: .seconds(2)))
        #expect(link.state == .unreachable(since: at(1), reason: "no route"))
        #expect(link.handle(.connected(at: at(9))) == .watch)
        #expect(link.state == .connected(since: at(9)))
    }

    @Test("losing a connection that was up long enough retries after the first delay, unreachable since the loss")
    func stableConnectionLostStartsOver() {
        var link = HostLink(backoff: Self.backoff, now: at(0))
        _ = link.handle(.failed(at: at(1), reason: "refused"))
        _ = link.handle(.failed(at: at(2), reason: "refused"))
        _ = link.handle(.connected(at: at(3)))
        #expect(link.handle(.lost(at: at(100), reason: "the far end closed the connection")) == .retry(after: .milliseconds(500)))
        #expect(link.state == .unreachable(since: at(100), reason: "the far end closed the connection"))
    }

    @Test("a host that drops connections as soon as it takes them is retried later and later, not in a tight loop")
    func flappingHostBacksOff() {
        var link = HostLink(backoff: Self.backoff, now: at(0))
        _ = link.handle(.connected(at: at(0)))
        var delays: [Duration] = []
        var time = 1.0
        for _ in 0..<4 {
            if case .retry(let delay)? = link.handle(.lost(at: at(time), reason: "closed")) { delays.append(delay) }
            time += 1
            _ = link.handle(.connected(at: at(time)))
            time += 1
        }
        #expect(delays == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4)])
    }

    @Test("a loss reported while not connected, or a connection reported twice, changes nothing")
    func duplicateEventsChangeNothing() {
        var link = HostLink(backoff: Self.backoff, now: at(0))
        #expect(link.handle(.lost(at: at(1), reason: "closed")) == nil)
        #expect(link.state == .connecting(since: at(0)))
        _ = link.handle(.failed(at: at(2), reason: "refused"))
        let unreachable = link
        #expect(link.handle(.lost(at: at(3), reason: "closed")) == nil)
        #expect(link == unreachable)
        _ = link.handle(.connected(at: at(4)))
        #expect(link.handle(.connected(at: at(5))) == nil)
        #expect(link.state == .connected(since: at(4)))
    }
}

@Suite("Host definitions")
struct HostDefinitionTests {
    func refusal(_ body: () throws(VMSessionError) -> Void) -> String? {
        do {
            try body()
            return nil
        } catch { return error.message }
    }

    @Test("SSH, TLS, local daemon and test-driver URIs are accepted")
    func acceptedURIs() {
        for uri in [
            "qemu+ssh://lab@10.0.0.2/session", "qemu+ssh://lab@127.0.0.1:2222/session?keyfile=/k&command=/usr/bin/ssh",
            "qemu+tls://host.example/system", "qemu+libssh2://u@h/system", "qemu:///system", "qemu:///session", "test:///default",
        ] {
            #expect(refusal { () throws(VMSessionError) in try HostDefinition.validate(uri: uri) } == nil, "\(uri)")
        }
    }

    @Test("the embedded driver, unencrypted or command transports, other schemes and malformed URIs are refused, saying which schemes are accepted")
    func refusedURIs() {
        for uri in [
            "qemu:///embed?root=/tmp/x", "qemu+tcp://h/system", "qemu+ext:///system?command=/bin/sh", "qemu+unix:///system",
            "xen:///system", "qemu+ssh:///system", "qemu+ssh://h/other", "test:///tmp/file.xml", "", "qemu+ssh://h/system x",
            String(repeating: "a", count: 2000),
        ] {
            #expect(refusal { () throws(VMSessionError) in try HostDefinition.validate(uri: uri) } != nil, "\(uri)")
        }
        let message = refusal { () throws(VMSessionError) in try HostDefinition.validate(uri: "xen:///system") }
        #expect(message?.contains("qemu+ssh://") == true)
    }

    @Test("names are DNS labels; 'local' is the daemon's own")
    func names() {
        #expect(refusal { () throws(VMSessionError) in try HostDefinition.validate(name: "lab-1") } == nil)
        for name in ["", "Lab", "-lab", "lab_1", "lab 1", String(repeating: "a", count: 64), "lab/1"] {
            #expect(refusal { () throws(VMSessionError) in try HostDefinition.validate(name: name) } != nil, "\(name)")
        }
        let local = refusal { () throws(VMSessionError) in
            _ = try HostDefinition.validated(name: "local", uri: "qemu:///system", labels: [:], maxSessions: nil, source: .admin)
        }
        #expect(local?.contains("daemon's own host") == true)
    }

    @Test("labels and the session limit are bounded")
    func labelsAndLimit() {
        func validated(_ labels: [String: String], _ limit: Int? = nil) -> String? {
            refusal { () throws(VMSessionError) in
                _ = try HostDefinition.validated(name: "a", uri: "test:///default", labels: labels, maxSessions: limit, source: .admin)
            }
        }
        #expect(validated(["room": "a-1", "gpu": ""]) == nil)
        #expect(validated(["Room": "a"]) != nil)
        #expect(validated(["room": "a b"]) != nil)
        #expect(validated(Dictionary(uniqueKeysWithValues: (0..<17).map { ("k\($0)", "v") })) != nil)
        #expect(validated([:], 0) != nil)
        #expect(validated([:], 10_001) != nil)
        #expect(validated([:], 4) == nil)
    }

    @Test("a configured host reads as NAME URI, labels KEY=VALUE and maxSessions=N")
    func configSpec() throws {
        let host = try HostDefinition.parse(spec: "lab1  qemu+ssh://lab@10.0.0.2/session room=a gpu=none maxSessions=4")
        #expect(host == HostDefinition(
            name: "lab1", uri: "qemu+ssh://lab@10.0.0.2/session", labels: ["room": "a", "gpu": "none"], maxSessions: 4, source: .config))
        #expect(throws: VMSessionError.self) { try HostDefinition.parse(spec: "lab1") }
        #expect(throws: VMSessionError.self) { try HostDefinition.parse(spec: "lab1 test:///default room") }
        #expect(throws: VMSessionError.self) { try HostDefinition.parse(spec: "lab1 test:///default maxSessions=many") }
        #expect(throws: VMSessionError.self) { try HostDefinition.parse(spec: "lab1 test:///default a=1 a=2") }
    }

    @Test("hosts reached over SSH or TLS are remote transports; local libvirts and the test driver are not")
    func remoteTransports() {
        for uri in ["qemu+ssh://u@h/session", "QEMU+SSH://h/system", "qemu+tls://h/system", "qemu+libssh2://h/system"] {
            #expect(HostDefinition.isRemoteTransport(uri), "\(uri)")
        }
        for uri in ["qemu:///system", "qemu:///session", "test:///default", "qemu:///embed?root=/x", ""] {
            #expect(!HostDefinition.isRemoteTransport(uri), "\(uri)")
        }
    }
}
