import Foundation
import Testing
import VMSessionTestSupport

/// Snapshots with memory on a real guest (the appliance under TCG, libvirt's embedded driver): the guest's
/// memory (its /tmp is RAM) comes back as it was, running or paused, across a daemon restart, and nothing is
/// left once the session is closed.
extension RealGuestSuites {
@Suite("Snapshots of a real guest", .serialized)
struct SnapshotTests {
    /// The guest writes a marker file a second and prints how many it holds: `SNAPTICK <n> MARKERS <count>`.
    static let userData = #"#!/bin/sh\nmkdir -p /tmp/m\ni=0\nwhile :; do i=$((i+1)); touch /tmp/m/$i; echo \"SNAPTICK $i MARKERS $(ls /tmp/m | wc -l)\"; sleep 1; done &\n"#

    /// The `(tick, markers)` lines the console shows after byte `offset`.
    static func ticks(_ console: String, after offset: Int = 0) -> [(tick: Int, markers: Int)] {
        guard let data = FileManager.default.contents(atPath: console), data.count > offset else { return [] }
        return String(decoding: data.dropFirst(offset), as: UTF8.self).split(whereSeparator: \.isNewline).compactMap { line in
            let words = line.split(separator: " ")
            guard let at = words.firstIndex(of: "SNAPTICK"), words.count >= at + 4, words[at + 2] == "MARKERS",
                let tick = Int(words[at + 1]), let markers = Int(words[at + 3].filter(\.isNumber))
            else { return nil }
            return (tick, markers)
        }
    }

    static func consoleSize(_ console: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: console))?[.size] as? Int) ?? 0
    }

    /// Waits until the console shows a tick line after `offset` that satisfies `match`.
    static func waitForTick(
        _ console: String, after offset: Int = 0, timeout: Duration = .seconds(120), _ match: ((tick: Int, markers: Int)) -> Bool = { _ in true }
    ) async throws -> (tick: Int, markers: Int) {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if let found = ticks(console, after: offset).first(where: match) { return found }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw DaemonError("the guest printed no matching SNAPTICK line within \(timeout)")
    }

    /// Runs an action that answers 202 and waits for its operation; returns the operation.
    static func operation(_ api: APIClient, _ path: String, token: String, body: String? = nil) async throws -> [String: Any] {
        let reply = try await api.call(.POST, path, token: token, body: body)
        #expect(reply.status == 202, "\(path): \(reply.json)")
        let id = try #require((reply["operation"] as? [String: Any])?["id"] as? String)
        return try await api.call(.GET, "/api/v1/operations/\(id)/wait?timeout=300", token: token).json
    }

    static func snapshotNames(_ api: APIClient, _ session: String, token: String) async throws -> [String] {
        let list = try await api.call(.GET, session + "/snapshots", token: token)
        return (list["snapshots"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
    }

    @Test("a revert brings back the guest's memory (markers before the snapshot, none after), running or paused, across a daemon restart; close leaves nothing")
    func revertRestoresMemory() async throws {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "the appliance must be built first: \(appliance)")
        let directory = try TemporaryDirectory("vms-e2e-snap")
        let state = directory.path + "/state"
        let daemon = DaemonProcess(stateDirectory: state, arguments: ["--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "5"])
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("snap-vm")
        let session = "/api/v1/sessions/\(id)"
        let console = "\(state)/machines/\(id)/console.log"

        #expect(try await Self.operation(api, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#)["status"] as? String == "succeeded")
        #expect(try await Self.operation(api, session + "/start", token: token, body: #"{"userData":"\#(Self.userData)"}"#)["status"] as? String == "succeeded")
        let before = try await Self.waitForTick(console) { $0.tick >= 3 }

        // Snapshot of the running guest: it holds at least the markers written so far.
        let taken = try await Self.operation(api, session + "/snapshots", token: token, body: #"{"name":"with-markers"}"#)
        #expect(taken["status"] as? String == "succeeded", "\(taken)")
        let atSnapshot = Self.ticks(console).last?.tick ?? 0
        let list = try await api.call(.GET, session + "/snapshots", token: token)
        let listed = try #require((list["snapshots"] as? [[String: Any]])?.first)
        #expect(listed["state"] as? String == "running")
        #expect((listed["bytes"] as? Int ?? 0) > 0, "the snapshot's bytes are counted: \(listed)")

        // Markers written after the snapshot...
        let later = try await Self.waitForTick(console) { $0.tick >= atSnapshot + 4 }
        #expect(later.markers == later.tick)

        // ... are gone after the revert; those from before are there. The first line the reverted guest prints
        // continues from the snapshot: its count is its own tick, below the one reached meanwhile.
        // Paused first, so that nothing the old guest prints lands after the offset; the revert runs it again.
        #expect(try await api.call(.POST, session + "/pause", token: token).status == 200)
        try await Task.sleep(for: .milliseconds(500))
        let offset = Self.consoleSize(console)
        let reverted = try await Self.operation(api, session + "/snapshots/with-markers/revert", token: token)
        #expect(reverted["status"] as? String == "succeeded", "\(reverted)")
        #expect(try await api.call(.GET, session, token: token)["state"] as? String == "running")
        let after = try await Self.waitForTick(console, after: offset)
        #expect(after.markers == after.tick, "the guest holds the markers of its own past only: \(after)")
        #expect(after.tick >= before.tick + 1, "markers written before the snapshot are back (\(after) after \(before))")
        #expect(after.tick <= atSnapshot + 2 && after.tick < later.tick, "markers written after the snapshot are gone (\(after); reached \(later))")

        // A snapshot of the paused guest reverts to a paused guest, whose ticks stand still until it resumes.
        #expect(try await api.call(.POST, session + "/pause", token: token).status == 200)
        let pausedSnapshot = try await Self.operation(api, session + "/snapshots", token: token, body: #"{"name":"paused"}"#)
        #expect(pausedSnapshot["status"] as? String == "succeeded", "\(pausedSnapshot)")
        #expect(try await api.call(.GET, session, token: token)["state"] as? String == "paused", "a snapshot leaves the VM as it was")
        #expect(try await api.call(.POST, session + "/resume", token: token).status == 200)
        _ = try await Self.waitForTick(console, after: Self.consoleSize(console))

        // The daemon restarts while the guest runs: the snapshots are still listed and can be reverted to.
        try await daemon.stop()
        try await daemon.start()
        let api2 = APIClient(port: daemon.port)
        #expect(Set(try await Self.snapshotNames(api2, session, token: token)) == ["with-markers", "paused"])

        // vmsessionctl takes, lists and deletes them by the session's name.
        let ctl = ["--url", "http://127.0.0.1:\(daemon.port)", "--state-dir", daemon.stateDirectory, "sessions", "snapshots"]
        let made = try await ControlCommandTests.run(ctl + ["create", "snap-vm", "by-cli"])
        #expect(made.status == 0, "\(made.output)")
        let listedByCLI = try await ControlCommandTests.run(ctl + ["list", "snap-vm"])
        #expect(listedByCLI.output.contains("by-cli") && listedByCLI.output.contains("with-markers"), "\(listedByCLI.output)")
        let badName = try await ControlCommandTests.run(ctl + ["create", "snap-vm", "not a name"])
        #expect(badName.status != 0 && badName.output.contains("A snapshot name is"), "\(badName.output)")
        #expect(try await ControlCommandTests.run(ctl + ["delete", "snap-vm", "by-cli"]).status == 0)
        #expect(Set(try await Self.snapshotNames(api2, session, token: token)) == ["with-markers", "paused"])
        let toPaused = try await Self.operation(api2, session + "/snapshots/paused/revert", token: token)
        #expect(toPaused["status"] as? String == "succeeded", "\(toPaused)")
        #expect(try await api2.call(.GET, session, token: token)["state"] as? String == "paused")
        let quiet = Self.consoleSize(console)
        try await Task.sleep(for: .seconds(3))
        #expect(Self.ticks(console, after: quiet).isEmpty, "a guest reverted to a paused snapshot does not run")
        #expect(try await api2.call(.POST, session + "/resume", token: token).status == 200)
        _ = try await Self.waitForTick(console, after: quiet)

        // Delete one; close the session: no snapshot, file or libvirt metadata of the VM is left.
        #expect(try await api2.call(.DELETE, session + "/snapshots/paused", token: token).status == 204)
        #expect(try await Self.snapshotNames(api2, session, token: token) == ["with-markers"])
        #expect(!RealVMTests.files(under: state + "/libvirt", named: "vms-\(id)").isEmpty, "libvirt keeps the VM's snapshot metadata while it lives")
        #expect(try await Self.operation(api2, session + "/close", token: token)["status"] as? String == "succeeded")
        #expect(try await Self.snapshotNames(api2, session, token: token).isEmpty)
        #expect(RealVMTests.files(under: state, named: "vms-\(id)").isEmpty, "no file of the VM remains (snapshot metadata included)")
        #expect(!FileManager.default.fileExists(atPath: "\(state)/machines/\(id)"), "its disk, with the snapshots inside, is gone")
        try await daemon.stop()
    }
}
}
