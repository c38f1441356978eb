import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
import VMSessionTestSupport

/// Contextualization and the guest API on a real guest: the user-data template is filled in, the guest
/// runs it, and its API answers through the daemon's proxy (`apiURL`), to the session's token only.
@Suite("Guest API on a real VM", .serialized)
struct GuestAPITests {
    @Test("start fills the user-data template; the guest API serves the parameter through the daemon, to the session's token only; pause and resume take it away and back")
    func guestAPIServesContextualizedValue() async throws {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "build the appliance first (make appliance)")
        let directory = try TemporaryDirectory("vms-e2e-api")
        let daemon = DaemonProcess(stateDirectory: directory.path + "/state", arguments: ["--accelerator", "tcg", "--appliance-dir", appliance])
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("guest-api")
        let session = "/api/v1/sessions/\(id)"
        let secretWord = "contextualized-\(UUID().uuidString.prefix(8))"

        try await api.withEvents(session: id, token: token, since: 0) { log in
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"memory":256,"disk":64}"#).status == 202)
            _ = try await log.state("open")
            // A missing parameter is refused before anything starts.
            let missing = try await api.call(.POST, session + "/start", token: token, body: ##"{"userData":"#!/bin/sh\necho ${word}\n"}"##)
            #expect(missing.status == 400)
            #expect(((missing.json["error"] as? [String: Any])?["message"] as? String ?? "").contains("'word'"))
            #expect(try await api.call(.GET, session, token: token)["state"] as? String == "open")

            let userData = ##"#!/bin/sh\necho '${word}' > /www/index.html\necho 'greeting: ${greeting:hello}' >> /www/index.html\n"##
            let start = try await api.call(
                .POST, session + "/start", token: token, body: #"{"userData":"\#(userData)","parameters":{"word":"\#(secretWord)"}}"#)
            #expect(start.status == 202)
            _ = try await log.state("running")
            let available = try await log.next("apiAvailable", timeout: .seconds(120))
            let apiURL = try #require(available.payload["apiURL"] as? String)
            #expect(available.payload["ip"] as? String == "10.0.2.15")
            #expect(try await api.call(.GET, session, token: token)["apiURL"] as? String == apiURL)
            #expect(apiURL == api.base + session + "/guest", "apiURL is the daemon's proxy, not the raw forward")
            let (status, page) = try await Self.fetch(apiURL + "/", token: token)
            #expect(status == 200)
            #expect(page.contains(secretWord), "the guest API serves the parameter's value through the proxy: \(page)")
            #expect(page.contains("greeting: hello"), "the default filled the other parameter")
            #expect(try await Self.fetch(apiURL + "/index.html?token=" + token).body.contains(secretWord), "?token= works too")
            #expect(try await Self.fetch(apiURL + "/").status == 401, "no token, no guest")
            #expect(try await Self.fetch(apiURL + "/", token: "wrong").status == 401)
            #expect(try await Self.fetch(apiURL + "/no-such-file", token: token).status == 404, "the guest's own 404 passes through")
            let oversized = try await api.call(
                .POST, session + "/guest/", token: token, body: String(repeating: "x", count: 9 << 20))
            #expect(oversized.status == 413, "a body past the limit is refused before the guest is asked")
            // Many at once: each is served or refused with 429 (8 in flight per session), none fails, and the
            // guest still answers afterwards.
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<24 { group.addTask { try await Self.fetch(apiURL + "/", token: token).status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.allSatisfy { $0 == 200 || $0 == 429 }, "\(statuses)")
            #expect(statuses.contains(200))
            #expect(try await Self.fetch(apiURL + "/", token: token).status == 200)

            #expect(try await api.call(.POST, session + "/pause", token: token).status == 200)
            let gone = try await log.next("apiUnavailable", timeout: .seconds(5))
            #expect((gone.payload["reason"] as? String ?? "").contains("paused"))
            let before = await log.count
            #expect(try await api.call(.POST, session + "/resume", token: token).status == 200)
            _ = try await log.next("apiAvailable", after: before, timeout: .seconds(30))

            #expect(try await api.call(.POST, session + "/close", token: token).status == 202)
            _ = try await log.state("closed")
        }
        try await daemon.stop()
    }

    /// A GET of `url`, with the session's token if given: the status and the body as text.
    static func fetch(_ url: String, token: String? = nil) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
    }
}
