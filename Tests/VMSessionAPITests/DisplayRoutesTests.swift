import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing
import VMSessionCore
@testable import VMSessionAPI

/// The display's routes on libvirt's test driver (no QEMU, so no VNC socket): who may reach them, and
/// when they answer. The display itself is shown against a real guest in Tests/Browser/test_display.py.
@Suite("The display's routes")
struct DisplayRoutesTests {
    @Test("the display and the screenshot need the session's token and a VM that runs; displayURL appears with it")
    func displayNeedsTokenAndRunningVM() async throws {
        try await APIFixture.run { client, _ in
            let (id, token) = try await client.newSession()
            let base = "/api/v1/sessions/\(id)"
            #expect(try await client.call(.get, base + "/screenshot").status == .unauthorized)
            #expect(try await client.call(.get, base + "/display?token=wrong").status == .unauthorized)
            let (_, other) = try await client.newSession()
            #expect(try await client.call(.get, base + "/display", token: other).errorCode == "not_allowed")
            let closed = try await client.call(.get, base + "/screenshot", token: token)
            #expect(closed.status == .conflict && closed.errorCode == "invalid_state")
            #expect(try await client.call(.get, base + "/display?token=\(token)").errorCode == "invalid_state")
            #expect(try await client.call(.get, base, token: token)["displayURL"] == nil)

            _ = try await client.call(.post, base + "/open", token: token, body: #"{"cpus":1,"memory":128,"disk":64,"version":"appliance"}"#)
            _ = try await client.settled(id, token: token)
            _ = try await client.call(.post, base + "/start", token: token, body: "{}")
            #expect(try await client.settled(id, token: token)["displayURL"] as? String == "/#display=\(id)")

            // Running: a plain GET says it takes a WebSocket; a bad mode is named.
            let plain = try await client.call(.get, base + "/display?token=\(token)&mode=read")
            #expect(plain.status == .badRequest && plain.errorCode == "invalid_usage")
            #expect((plain.error?["message"] as? String ?? "").contains("WebSocket"))
            let mode = try await client.call(.get, base + "/display?token=\(token)&mode=type")
            #expect(mode.errorCode == "invalid_argument")
            #expect((mode.error?["message"] as? String ?? "").contains("'mode'"))

            _ = try await client.call(.post, base + "/pause", token: token)
            #expect(try await client.call(.get, base, token: token)["displayURL"] as? String == "/#display=\(id)", "paused: the screen is still there")
            _ = try await client.call(.post, base + "/stop", token: token)
            #expect(try await client.settled(id, token: token)["displayURL"] == nil)
        }
    }

    @Test("noVNC's library is served to any origin from Debian's package, and nothing else from its directory")
    func noVNCServed() async throws {
        try await APIFixture.run { client, fixture in
            let rfb = try await client.text(.get, "/lib/novnc/core/rfb.js", origin: "http://localhost:8123")
            #expect(rfb.status == .ok)
            #expect(rfb.headers[.contentType] == "text/javascript; charset=utf-8")
            #expect(rfb.headers[.accessControlAllowOrigin] == "*", "an ES module imported by another origin's page")
            #expect(rfb.body.contains("export default class RFB"))
            #expect(try await client.text(.get, "/lib/novnc/vendor/pako/lib/zlib/inflate.js").status == .ok)
            #expect(try fixture.store.allOrigins().isEmpty, "loading the library asks nothing of the user")
            for outside in ["/lib/novnc/vnc.html", "/lib/novnc/core/../../../../etc/passwd", "/lib/novnc/core/nothing.js", "/lib/novnc/"] {
                #expect(try await client.text(.get, outside).status == .notFound, "\(outside)")
            }
        }
    }

    @Test("a session's display takes at most its share of viewers; a viewer that leaves frees its place")
    func viewerLimit() {
        let viewers = DisplayViewers(perSession: 3)
        let (one, other) = (SessionID(), SessionID())
        #expect((0..<3).allSatisfy { _ in viewers.acquire(one) })
        #expect(!viewers.hasRoom(one) && !viewers.acquire(one))
        #expect(viewers.acquire(other), "another session's display is not affected")
        viewers.release(one)
        #expect(viewers.hasRoom(one) && viewers.acquire(one))
        #expect(DisplayViewers.full.code == .tooManyStreams)
    }
}
