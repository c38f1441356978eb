import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing
import VMSessionCore
import VMSessionTestSupport

/// The template routes over the real manager and store, with a scripted hypervisor (which makes no
/// templates): who may ask, and every refusal, each changing nothing. Warm starts themselves are tested on
/// real guests (TemplateTests).
@Suite("Template routes")
struct TemplateRoutesTests {
    @Test("only the admin token reaches the templates; bad input, an unknown or unready session and an unknown template are refused and change nothing")
    func refusals() async throws {
        let hypervisor = ScriptedHypervisor()
        try await APIFixture.run(hypervisor: hypervisor) { client, fixture in
            let admin = fixture.adminToken
            let (id, token, base) = try await SnapshotRoutesTests.running(client)
            let defines = await hypervisor.callCount(.define)
            #expect(try await client.call(.get, "/api/v1/templates").status == .unauthorized)
            #expect(try await client.call(.get, "/api/v1/templates", token: token).status == .forbidden)
            let create = { (body: String) in try await client.call(.post, "/api/v1/templates", token: admin, body: body) }

            let badName = try await create(#"{"name":"no/slash","fromSession":"\#(id)"}"#)
            #expect(badName.status == .badRequest && badName.errorCode == "invalid_argument", "\(badName.json)")
            let badID = try await create(#"{"name":"warm","fromSession":"not-a-uuid"}"#)
            #expect(badID.status == .badRequest && badID.errorCode == "invalid_argument", "\(badID.json)")
            let extra = try await create(#"{"name":"warm","fromSession":"\#(id)","memory":1}"#)
            #expect(extra.status == .badRequest, "\(extra.json)")
            let unknown = try await create(#"{"name":"warm","fromSession":"\#(UUID())"}"#)
            #expect(unknown.status == .notFound, "\(unknown.json)")
            // A running session started without user-data has no seed drive for a warm session's own.
            let noSeed = try await create(#"{"name":"warm","fromSession":"\#(id)"}"#)
            #expect(noSeed.status == .conflict && noSeed.errorCode == "invalid_state", "\(noSeed.json)")
            #expect((noSeed.json["error"] as? [String: Any])?["message"] as? String ?? "" != "")
            // An image's version is not a template's name.
            let image = try await create(#"{"name":"appliance","fromSession":"\#(id)"}"#)
            #expect(image.status == .conflict, "\(image.json)")
            // Not running: refused for that before anything else.
            #expect(try await client.call(.post, base + "/pause", token: token).status == .ok)
            let paused = try await create(#"{"name":"warm","fromSession":"\#(id)"}"#)
            #expect(paused.status == .conflict && (paused.json["error"] as? [String: Any])?["message"] as? String ?? "" != "")

            #expect(await hypervisor.callCount(.define) == defines, "no refusal touched the hypervisor")
            #expect(try await client.call(.get, base, token: token)["state"] as? String == "paused")
            let list = try await client.call(.get, "/api/v1/templates", token: admin)
            #expect(list.status == .ok && (list["templates"] as? [Any])?.isEmpty == true)
            #expect(try await client.call(.get, "/api/v1/templates/warm", token: admin).status == .notFound)
            #expect(try await client.call(.delete, "/api/v1/templates/warm", token: admin).status == .notFound)
            #expect(try await client.call(.delete, "/api/v1/templates/bad%20name", token: admin).status == .badRequest)
            // A version that names no template is an image's, as before: an unknown one is refused at open.
            let (other, otherToken) = try await client.newSession()
            let open = try await client.call(.post, "/api/v1/sessions/\(other)/open", token: otherToken, body: #"{"version":"no-such-thing"}"#)
            #expect(open.status == .notFound || open.status == .badRequest, "\(open.json)")
        }
    }

    @Test("a template from an image is refused at once, saying why, for bad fields, an unknown image or a taken name; no session or VM is made")
    func warmUpRefusals() async throws {
        let hypervisor = ScriptedHypervisor()
        try await APIFixture.run(hypervisor: hypervisor) { client, fixture in
            let admin = fixture.adminToken
            let create = { (body: String) in try await client.call(.post, "/api/v1/templates", token: admin, body: body) }
            let noImage = try await create(#"{"name":"warm","fromImage":"no-such","userData":"x"}"#)
            #expect(noImage.status == .notFound && "\(noImage.json)".contains("no-such"), "\(noImage.json)")
            let noUserData = try await create(#"{"name":"warm","fromImage":"appliance"}"#)
            #expect(noUserData.status == .badRequest && "\(noUserData.json)".contains("userData"), "\(noUserData.json)")
            let emptyUserData = try await create(#"{"name":"warm","fromImage":"appliance","userData":""}"#)
            #expect(emptyUserData.status == .badRequest, "\(emptyUserData.json)")
            let both = try await create(#"{"name":"warm","fromImage":"appliance","userData":"x","fromSession":"\#(UUID())"}"#)
            #expect(both.status == .badRequest, "\(both.json)")
            let neither = try await create(#"{"name":"warm"}"#)
            #expect(neither.status == .badRequest && "\(neither.json)".contains("fromImage"), "\(neither.json)")
            let timeout = try await create(#"{"name":"warm","fromImage":"appliance","userData":"x","readyTimeout":99999}"#)
            #expect(timeout.status == .badRequest && "\(timeout.json)".contains("readyTimeout"), "\(timeout.json)")
            let memory = try await create(#"{"name":"warm","fromImage":"appliance","userData":"x","memory":1}"#)
            #expect(memory.status == .badRequest && "\(memory.json)".contains("memory"), "\(memory.json)")
            let imageName = try await create(#"{"name":"appliance","fromImage":"appliance","userData":"x"}"#)
            #expect(imageName.status == .conflict, "\(imageName.json)")
            let unknownField = try await create(#"{"name":"warm","fromImage":"appliance","userData":"x","secret":"s"}"#)
            #expect(unknownField.status == .badRequest, "\(unknownField.json)")
            #expect(try await client.call(.get, "/api/v1/templates/warm/warm-up", token: admin).status == .notFound)
            #expect(try await client.call(.get, "/api/v1/templates/bad%20name/warm-up", token: admin).status == .badRequest)
            #expect(await hypervisor.callCount(.define) == 0, "no refusal touched the hypervisor")
            let sessions = try await client.call(.get, "/api/v1/sessions", token: admin)
            #expect((sessions["sessions"] as? [Any])?.isEmpty == true, "no internal session was made: \(sessions.json)")
        }
    }
}

extension TemplateRoutesTests {
    /// A warm-up under way has no template yet; the admin's list must show it anyway (the daemon's page does).
    /// The fixture runs no ``TemplateWarmUp`` service, so the warm-up stays where `begin` left it: under way.
    @Test("the template list shows a warm-up from an image beside the templates while it runs, and only to the admin")
    func listShowsWarmUps() async throws {
        let hypervisor = ScriptedHypervisor()
        try await APIFixture.run(hypervisor: hypervisor) { client, fixture in
            let admin = fixture.adminToken
            let empty = try await client.call(.get, "/api/v1/templates", token: admin)
            #expect(empty.status == .ok && (empty["warmUps"] as? [Any])?.isEmpty == true, "\(empty.json)")
            let begun = try await client.call(
                .post, "/api/v1/templates", token: admin, body: #"{"name":"warm","fromImage":"appliance","userData":"x"}"#)
            #expect(begun.status == .accepted, "\(begun.json)")
            let list = try await client.call(.get, "/api/v1/templates", token: admin)
            #expect((list["templates"] as? [Any])?.isEmpty == true, "no template before the warm-up ends: \(list.json)")
            let warmUps = try #require(list["warmUps"] as? [[String: Any]], "\(list.json)")
            #expect(warmUps.count == 1, "\(list.json)")
            #expect(warmUps.first?["name"] as? String == "warm" && warmUps.first?["image"] as? String == "appliance")
            #expect(warmUps.first?["status"] as? String == "running")
            #expect(warmUps.first?["sessionId"] as? String == begun["sessionId"] as? String && begun["sessionId"] != nil)
            let (_, token) = try await client.newSession()
            #expect(try await client.call(.get, "/api/v1/templates", token: token).status == .forbidden)
        }
    }
}
