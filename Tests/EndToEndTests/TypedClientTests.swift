import Foundation
import Testing
import VMSessionClient
import VMSessionTestSupport

/// The typed client that vmsessionctl and these tests share, against the real daemon (test driver): each call
/// reaches its route, and a refusal comes back as the daemon's own code and message.
@Suite("Typed client (daemon process, test driver)", .serialized)
struct TypedClientTests {
    @Test("session calls round-trip, and refusals carry the daemon's code, message and status")
    func sessionCallsAndRefusals() async throws {
        let directory = try TemporaryDirectory("vms-e2e-client")
        let appliance = try directory.standInAppliance()
        let daemon = DaemonProcess(
            stateDirectory: directory.path + "/state", arguments: ["--libvirt-uri", "test:///default", "--appliance-dir", appliance])
        try await daemon.start()
        let base = "http://127.0.0.1:\(daemon.port)"
        let admin = VMSessionClient(baseURL: base, token: try daemon.adminToken())

        let info = try await VMSessionClient(baseURL: base).daemonInfo()
        #expect(info.name == "vmsessiond")
        #expect(info.hypervisor.uri == "test:///default")

        let grant = try await VMSessionClient(baseURL: base).requestSession(name: "typed", secret: "s3cret")
        #expect(grant.created && grant.session.state == "closed")
        let owner = VMSessionClient(baseURL: base, token: grant.token)
        let again = try await owner.requestSession(name: "typed", secret: "s3cret")
        #expect(!again.created && again.session.id == grant.session.id)

        let opened = try await owner.run("open", on: grant.session.id)
        #expect(opened.status == "succeeded" && opened.action == "open")
        #expect(try await owner.session(grant.session.id).state == "open")
        #expect(try await owner.setExecutionCap(40, on: grant.session.id).executionCap == 40)
        try await owner.setProperty("colour", to: "blue / green", on: grant.session.id)
        #expect(try await owner.property("colour", of: grant.session.id) == "blue / green")
        #expect(try await admin.sessionID("typed") == grant.session.id)

        // Refusals: the daemon's code and status, with state unchanged.
        let wrongSecret = await #expect(throws: VMSessionClientError.self) {
            try await VMSessionClient(baseURL: base).requestSession(name: "typed", secret: "wrong")
        }
        #expect(wrongSecret?.status == 403, "\(String(describing: wrongSecret))")
        let noToken = await #expect(throws: VMSessionClientError.self) { try await owner.with(token: nil).session(grant.session.id) }
        #expect(noToken?.code == "unauthorized" && noToken?.status == 401)
        let badCap = await #expect(throws: VMSessionClientError.self) { try await owner.setExecutionCap(0, on: grant.session.id) }
        #expect(badCap?.code == "invalid_argument" && badCap?.status == 400)
        #expect(try await owner.session(grant.session.id).executionCap == 40)
        let deleteOpen = await #expect(throws: VMSessionClientError.self) { try await owner.deleteSession(grant.session.id) }
        #expect(deleteOpen?.code == "invalid_state")

        _ = try await admin.decide("approve", origin: "http://localhost:8123")
        #expect(try await admin.origins().contains { $0.origin == "http://localhost:8123" && $0.status == "approved" })
        _ = try await admin.images()
        let notAdmin = await #expect(throws: VMSessionClientError.self) { try await owner.images() }
        #expect(notAdmin?.code == "not_allowed" && notAdmin?.status == 403)

        try await owner.run("close", on: grant.session.id)
        try await owner.deleteSession(grant.session.id)
        let gone = await #expect(throws: VMSessionClientError.self) { try await admin.session(grant.session.id) }
        #expect(gone?.status == 404)
        let unreachable = await #expect(throws: VMSessionClientError.self) {
            try await VMSessionClient(baseURL: "http://127.0.0.1:1").daemonInfo()
        }
        #expect(unreachable?.code == "unreachable")
        try await daemon.stop()
    }
}
