import Foundation
import HTTPTypes
import HummingbirdTesting
import Synchronization
import Testing
import VMSessionCore
import VMSessionIdle

/// An idle source the test sets by hand: milliseconds since the last "input".
final class FakeIdleSource: IdleSource {
    let milliseconds = Mutex<UInt64>(0)
    var name: String { "fake" }
    func idleMilliseconds() async throws(VMSessionError) -> UInt64 { milliseconds.withLock { $0 } }
    func set(_ value: UInt64) { milliseconds.withLock { $0 = value } }
}

/// The idle-aware controller's routes and its logic over the real router, manager and test driver.
@Suite("Daemon and controller routes")
struct DaemonRoutesTests {
    @Test("with no display, GET /api/v1/daemon says detection is unavailable and why, and counts the desktop as idle")
    func noDisplay() async throws {
        try await APIFixture.run { client, _ in
            let reply = try await Self.waitFor(client) { $0["lastChange"] != nil }
            #expect(reply["isRunning"] as? Bool == true)
            #expect(reply["idleDetection"] as? String == "unavailable")
            #expect((reply["idleDetectionReason"] as? String ?? "").contains("no display"))
            #expect(reply["isSystemIdle"] as? Bool == true)
            #expect(reply["idleTime"] as? Int == 30)
            #expect(reply["idleSince"] != nil)
        }
    }

    @Test("PUT /api/v1/daemon needs the admin token, validates idleTime, is refused from unapproved pages, and stores what it accepts")
    func idleTimeSetting() async throws {
        try await APIFixture.run { client, fixture in
            for body in [#"{"idleTime":0}"#, #"{"idleTime":86401}"#, #"{"idleTime":"5"}"#, #"{"idleTime":5,"x":1}"#, "{}"] {
                let reply = try await client.call(.put, "/api/v1/daemon", token: fixture.adminToken, body: body)
                #expect(reply.status == .badRequest, "\(body)")
                #expect(reply.errorCode == "invalid_argument")
            }
            var headers = HTTPFields()
            headers[.origin] = "https://page.example"
            let refused = try await client.execute(
                uri: "/api/v1/daemon", method: .put, headers: headers, body: .init(string: #"{"idleTime":7}"#)) { $0.status }
            #expect(refused == .forbidden)
            #expect(try fixture.store.setting("idleTime") == nil, "a refused request changes nothing")
            #expect(try await client.call(.put, "/api/v1/daemon", body: #"{"idleTime":7}"#).status == .unauthorized)
            let session = try await client.newSession()
            #expect(try await client.call(.put, "/api/v1/daemon", token: session.token, body: #"{"idleTime":7}"#).status == .forbidden)
            #expect(try fixture.store.setting("idleTime") == nil, "a refused request changes nothing")
            let accepted = try await client.call(.put, "/api/v1/daemon", token: fixture.adminToken, body: #"{"idleTime":7}"#)
            #expect(accepted.status == .ok)
            #expect(accepted["idleTime"] as? Int == 7)
            #expect(try fixture.store.setting("idleTime") == "7")
        }
    }

    @Test("an origin approved as privileged may change the idle time and stop and start the controller; a plain approved one may only read")
    func privilegedOrigin() async throws {
        try await APIFixture.run { client, fixture in
            let plain = "http://plain.localhost:8000", privileged = "http://privileged.localhost:8000"
            #expect(try await client.call(.post, "/api/v1/origins/approve", token: fixture.adminToken, body: #"{"origin":"\#(plain)"}"#).status == .ok)
            let refusedFlag = try await client.call(
                .post, "/api/v1/origins/deny", token: fixture.adminToken, body: #"{"origin":"\#(privileged)","privileged":true}"#)
            #expect(refusedFlag.status == .badRequest, "only approve takes privileged")
            let approved = try await client.call(
                .post, "/api/v1/origins/approve", token: fixture.adminToken, body: #"{"origin":"\#(privileged)","privileged":true}"#)
            #expect(approved["privileged"] as? Bool == true)

            let read = try await client.call(.get, "/api/v1/daemon", origin: plain)
            #expect(read.status == .ok && read["privileged"] as? Bool == false && read["path"] == nil)
            let plainWrite = try await client.call(.put, "/api/v1/daemon", body: #"{"idleTime":9}"#, origin: plain)
            #expect(plainWrite.status == .unauthorized)
            #expect((plainWrite.error?["message"] as? String ?? "").contains("--privileged"))
            #expect(try fixture.store.setting("idleTime") == nil)

            let shown = try await client.call(.get, "/api/v1/daemon", origin: privileged)
            #expect(shown["privileged"] as? Bool == true)
            #expect((shown["path"] as? String ?? "").hasPrefix("/"))
            let set = try await client.call(.put, "/api/v1/daemon", body: #"{"idleTime":9}"#, origin: privileged)
            #expect(set.status == .ok && set["idleTime"] as? Int == 9)
            let stopped = try await client.call(.put, "/api/v1/daemon", body: #"{"running":false}"#, origin: privileged)
            #expect(stopped["isRunning"] as? Bool == false)
            #expect(try fixture.store.setting("controllerEnabled") == "false", "stopping is stored")
            let started = try await client.call(.put, "/api/v1/daemon", body: #"{"running":true}"#, origin: privileged)
            #expect(started["isRunning"] as? Bool == true)

            // Forgetting the origin takes the privilege with it.
            #expect(try await client.call(.post, "/api/v1/origins/forget", token: fixture.adminToken, body: #"{"origin":"\#(privileged)"}"#).status == .noContent)
            #expect(try await client.call(.put, "/api/v1/daemon", body: #"{"idleTime":3}"#, origin: privileged).status != .ok)
        }
    }

    @Test("an admin's activity report makes a headless desktop active, and its idle report idle again")
    func reportedActivity() async throws {
        try await APIFixture.run { client, fixture in
            let admin = fixture.adminToken
            #expect(try await client.call(.post, "/api/v1/daemon/activity", body: #"{"active":true}"#).status == .unauthorized)
            #expect(try await client.call(.post, "/api/v1/daemon/activity", token: admin, body: #"{"active":"yes"}"#).status == .badRequest)
            #expect(try await client.call(.post, "/api/v1/daemon/activity", token: admin, body: #"{"active":true}"#).status == .ok)
            let active = try await Self.waitFor(client) { $0["isSystemIdle"] as? Bool == false }
            #expect(active["idleDetection"] as? String == "reported")
            #expect(active["activeSince"] != nil)
            #expect(try await client.call(.post, "/api/v1/daemon/activity", token: admin, body: #"{"active":false}"#).status == .ok)
            _ = try await Self.waitFor(client) { $0["isSystemIdle"] as? Bool == true }
        }
    }

    @Test("PATCH …/daemon refuses bad settings naming the field and changing nothing, and keeps absent fields")
    func patchValidation() async throws {
        try await APIFixture.run { client, _ in
            let (id, token) = try await client.newSession()
            let path = "/api/v1/sessions/\(id)/daemon"
            for (body, field) in [
                (#"{"minCap":101}"#, "minCap"), (#"{"minCap":-1}"#, "minCap"), (#"{"maxCap":0}"#, "maxCap"),
                (#"{"flags":4}"#, "flags"), (#"{"controlled":1}"#, "controlled"), (#"{"minCap":50,"maxCap":40}"#, "minCap"),
                (#"{"speed":1}"#, "speed"),
            ] {
                let reply = try await client.call(.patch, path, token: token, body: body)
                #expect(reply.status == .badRequest, "\(body)")
                #expect((reply.error?["message"] as? String ?? "").contains(field), "\(body): \(reply.json)")
            }
            let unchanged = try await client.call(.get, "/api/v1/sessions/\(id)", token: token)
            #expect(unchanged["daemonControlled"] as? Bool == false)
            #expect(unchanged["daemonMinCap"] as? Int == 0)
            #expect(try await client.call(.patch, path, body: #"{"minCap":5}"#).status == .unauthorized)

            let set = try await client.call(.patch, path, token: token, body: #"{"controlled":true,"minCap":25,"flags":2}"#)
            #expect(set.status == .ok)
            #expect(set["daemonControlled"] as? Bool == true)
            #expect(set["daemonMinCap"] as? Int == 25)
            #expect(set["daemonMaxCap"] as? Int == 100, "an absent field keeps its value")
            #expect(set["daemonFlags"] as? Int == 2)
        }
    }

    @Test("a user's cap on a session whose cap the controller owns is refused with invalid_state; with minCap 0 it is the user's")
    func userCapOnControlledSession() async throws {
        try await APIFixture.run { client, _ in
            let (id, token) = try await client.newSession()
            let base = "/api/v1/sessions/\(id)"
            #expect(try await client.call(.patch, base + "/daemon", token: token, body: #"{"controlled":true,"minCap":25}"#).status == .ok)
            let refused = try await client.call(.put, base + "/execution-cap", token: token, body: #"{"cap":50}"#)
            #expect(refused.status == .conflict)
            #expect(refused.errorCode == "invalid_state")
            #expect((refused.error?["message"] as? String ?? "").contains("daemonControlled"))
            #expect(try await client.call(.get, base, token: token)["executionCap"] as? Int == 100, "nothing changed")
            #expect(try await client.call(.patch, base + "/daemon", token: token, body: #"{"minCap":0}"#).status == .ok)
            #expect(try await client.call(.put, base + "/execution-cap", token: token, body: #"{"cap":50}"#).status == .ok)
        }
    }

    @Test("the controller starts an idle DF_AUTOSTART session, pauses it on input and resumes it when idle again (minCap 0)")
    func controllerDrivesASession() async throws {
        let source = FakeIdleSource()
        source.set(0)
        try await APIFixture.run(source: source) { client, fixture in
            #expect(try await client.call(.put, "/api/v1/daemon", token: fixture.adminToken, body: #"{"idleTime":1}"#).status == .ok)
            let (id, token) = try await client.newSession()
            let base = "/api/v1/sessions/\(id)"
            #expect(try await client.call(.post, base + "/open", token: token, body: #"{"memory":128,"disk":64}"#).status == .accepted)
            _ = try await Self.waitForSession(client, base, token, state: "open")
            #expect(try await client.call(.patch, base + "/daemon", token: token, body: #"{"controlled":true,"minCap":0,"flags":2}"#).status == .ok)

            // Active: a shut-down VM stays shut down.
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await client.call(.get, base, token: token)["state"] as? String == "open")
            source.set(5000)
            _ = try await Self.waitForSession(client, base, token, state: "running")
            source.set(10)
            _ = try await Self.waitForSession(client, base, token, state: "paused")
            source.set(5000)
            _ = try await Self.waitForSession(client, base, token, state: "running")

            let kinds = try fixture.store.events(for: SessionID(id), after: 0).map(\.kind)
            #expect(kinds.filter { $0 == .idleChanged }.count >= 3, "\(kinds)")
            #expect(kinds.contains(.daemonControlChanged))
        }
    }

    // MARK: Helpers

    static func waitFor(_ client: any TestClientProtocol, _ match: ([String: Any]) -> Bool) async throws -> Reply {
        for _ in 0..<200 {
            let reply = try await client.call(.get, "/api/v1/daemon")
            if match(reply.json) { return reply }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw VMSessionError(.internalError, "the daemon status never matched")
    }

    static func waitForSession(_ client: any TestClientProtocol, _ path: String, _ token: String, state: String) async throws -> Reply {
        var last = ""
        for _ in 0..<200 {
            let reply = try await client.call(.get, path, token: token)
            last = reply["state"] as? String ?? ""
            if last == state { return reply }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw VMSessionError(.internalError, "the session never reached \(state) (last: \(last))")
    }
}
