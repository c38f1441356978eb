import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
import NIOCore
import Testing
import VMSessionCore
import VMSessionDaemon

/// The host routes over the real registry and store: who may ask, what a host looks like, and every refusal,
/// each answered with a JSON error that says what was wrong and changing nothing.
@Suite("Host routes")
struct HostRoutesTests {
    static func names(_ reply: Reply) -> [String] {
        ((reply["hosts"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }
    }

    @Test("only the admin token reaches the hosts; the local host is listed connected, with its capacity and its sessions")
    func listsLocalHost() async throws {
        try await APIFixture.run { client, fixture in
            #expect(try await client.call(.get, "/api/v1/hosts").status == .unauthorized)
            let (id, token) = try await client.newSession()
            #expect(try await client.call(.get, "/api/v1/hosts", token: token).status == .forbidden)
            #expect(try await client.call(.get, "/api/v1/hosts/local", token: token).status == .forbidden)
            #expect(try await client.call(.post, "/api/v1/hosts/local/drain", token: token).status == .forbidden)

            let list = try await client.call(.get, "/api/v1/hosts", token: fixture.adminToken)
            #expect(list.status == .ok)
            #expect(Self.names(list) == ["local"])
            let local = try await client.call(.get, "/api/v1/hosts/local", token: fixture.adminToken)
            #expect(local["state"] as? String == "connected")
            #expect(local["source"] as? String == "local")
            #expect(local["uri"] as? String == "test:///default")
            #expect(local["draining"] as? Bool == false)
            #expect(local["since"] is String)
            #expect(local["sessions"] as? Int == 0, "a session without a VM (closed) is on no host")
            #expect((local["capacity"] as? [String: Any]) == nil, "no monitor runs here to read the capacity")
            let network = local["guestNetwork"] as? [String: Any]
            #expect(network?["available"] as? Bool == true && network?["reason"] == nil, "the stand-in guests' API is served here: \(local.json)")
            let base = "/api/v1/sessions/\(id)"
            #expect(try await client.call(.post, base + "/open", token: token, body: #"{"memory":128,"disk":64,"version":"appliance"}"#).status == .accepted)
            #expect(try await client.settled(id, token: token)["state"] as? String == "open")
            let holding = try await client.call(.get, "/api/v1/hosts/local", token: fixture.adminToken)
            #expect(holding["sessions"] as? Int == 1)
        }
    }

    @Test("a host is added, shown, drained, undrained and removed; it is stored")
    func addDrainRemove() async throws {
        try await APIFixture.run { client, fixture in
            let admin = fixture.adminToken
            let added = try await client.call(
                .post, "/api/v1/hosts", token: admin,
                body: #"{"name":"lab1","uri":"qemu+ssh://lab@127.0.0.1:1/session","labels":{"room":"a"},"maxSessions":4}"#)
            #expect(added.status == .created, "\(added.json)")
            #expect(added.headers[.location] == "/api/v1/hosts/lab1")
            #expect(added["state"] as? String == "connecting", "no monitor runs here, so the first attempt never ends")
            #expect(added["labels"] as? [String: String] == ["room": "a"])
            #expect(added["maxSessions"] as? Int == 4)
            #expect(added["source"] as? String == "admin")
            #expect(added["guestNetwork"] == nil, "not known before the daemon connects to the host: \(added.json)")
            #expect(try fixture.store.hosts().map(\.name) == ["lab1", "local"])

            let drained = try await client.call(.post, "/api/v1/hosts/lab1/drain", token: admin)
            #expect(drained.status == .ok && drained["draining"] as? Bool == true)
            #expect(try fixture.store.hosts().first { $0.name == "lab1" }?.draining == true)
            let undrained = try await client.call(.post, "/api/v1/hosts/lab1/undrain", token: admin)
            #expect(undrained["draining"] as? Bool == false)
            #expect(try await client.call(.post, "/api/v1/hosts/local/drain", token: admin)["draining"] as? Bool == true)

            #expect(try await client.call(.delete, "/api/v1/hosts/lab1", token: admin).status == .noContent)
            #expect(Self.names(try await client.call(.get, "/api/v1/hosts", token: admin)) == ["local"])
            #expect(try fixture.store.hosts().map(\.name) == ["local"])
        }
    }

    @Test("bad names, URIs, labels, limits, unknown fields, a taken name, an unknown host and removing the local host are refused with a JSON error, and change nothing")
    func refusals() async throws {
        try await APIFixture.run { client, fixture in
            let admin = fixture.adminToken
            let existing = try await client.call(.post, "/api/v1/hosts", token: admin, body: #"{"name":"lab1","uri":"test:///default"}"#)
            #expect(existing.status == .created)
            let before = NSDictionary(dictionary: try await client.call(.get, "/api/v1/hosts", token: admin).json)
            let stored = try fixture.store.hosts()

            let refused: [(body: String, status: HTTPResponse.Status, says: String)] = [
                (#"{"name":"Lab","uri":"test:///default"}"#, .badRequest, "lowercase"),
                (#"{"name":"local","uri":"test:///default"}"#, .badRequest, "daemon's own host"),
                (#"{"name":"lab2","uri":"qemu:///embed?root=/tmp/x"}"#, .badRequest, "embedded driver"),
                (#"{"name":"lab2","uri":"qemu+tcp://10.0.0.2/system"}"#, .badRequest, "qemu+ssh://"),
                (#"{"name":"lab2","uri":"qemu+ssh:///system"}"#, .badRequest, "names the host"),
                (#"{"name":"lab2","uri":""}"#, .badRequest, "1 to 1024 bytes"),
                (#"{"name":"lab2","uri":"test:///default","labels":{"Room":"a"}}"#, .badRequest, "label key"),
                (#"{"name":"lab2","uri":"test:///default","labels":{"room":"a b"}}"#, .badRequest, "value of label"),
                (#"{"name":"lab2","uri":"test:///default","maxSessions":0}"#, .badRequest, "maxSessions"),
                (#"{"name":"lab2","uri":"test:///default","cpus":4}"#, .badRequest, "Unknown field 'cpus'"),
                (#"{"name":"lab2"}"#, .badRequest, "uri"),
                (#"{"name":"lab1","uri":"test:///default"}"#, .conflict, "already a host named 'lab1'"),
                (#"[1]"#, .badRequest, "JSON object"),
            ]
            for (body, status, says) in refused {
                let reply = try await client.call(.post, "/api/v1/hosts", token: admin, body: body)
                #expect(reply.status == status, "\(body): \(reply.json)")
                let message = reply.error?["message"] as? String ?? ""
                #expect(message.contains(says), "\(body): \(message)")
            }
            let long = String(repeating: "a", count: 1100)
            #expect(try await client.call(.post, "/api/v1/hosts", token: admin, body: #"{"name":"lab2","uri":"\#(long)"}"#).status == .badRequest)

            for (method, path, status) in [
                (HTTPRequest.Method.get, "/api/v1/hosts/nope", HTTPResponse.Status.notFound),
                (.get, "/api/v1/hosts/Bad%20Name", .badRequest),
                (.post, "/api/v1/hosts/nope/drain", .notFound),
                (.post, "/api/v1/hosts/nope/undrain", .notFound),
                (.delete, "/api/v1/hosts/nope", .notFound),
                (.delete, "/api/v1/hosts/local", .conflict),
            ] {
                let reply = try await client.call(method, path, token: admin)
                #expect(reply.status == status, "\(method) \(path): \(reply.json)")
                #expect(reply.errorCode != nil, "\(method) \(path)")
            }
            let after = NSDictionary(dictionary: try await client.call(.get, "/api/v1/hosts", token: admin).json)
            #expect(after == before)
            #expect(try fixture.store.hosts() == stored)
        }
    }

    @Test("/metrics shows each host's up gauge")
    func metricsShowHosts() async throws {
        try await APIFixture.run { client, fixture in
            _ = try await client.call(.post, "/api/v1/hosts", token: fixture.adminToken, body: #"{"name":"lab1","uri":"test:///default"}"#)
            let text = try await client.execute(
                uri: "/metrics", method: .get, headers: [.authorization: "Bearer \(fixture.adminToken)"]
            ) { String(buffer: $0.body) }
            #expect(text.contains(#"vmsessiond_host_up{host="local"} 1"#), "\(text.prefix(400))")
            #expect(text.contains(#"vmsessiond_host_up{host="lab1"} 0"#))
        }
    }
}
