import Foundation
import Testing
import VMSessionTestSupport

/// The daemon SIGKILLed in the middle of an action on a real guest (libvirt's embedded driver, TCG), then
/// restarted: the session must show what the VM really is, and the next action must work.
extension RealGuestSuites {
@Suite("kill -9 during an action on a real guest", .serialized)
struct KillDuringActionTests {
    typealias Real = RealGuestSuites.RealVMTests

    /// A daemon on a fresh state directory with one session opened with the appliance.
    static func opened(_ directory: TemporaryDirectory) async throws -> (DaemonProcess, String, String) {
        let appliance = DaemonProcess.applianceDirectory
        try #require(FileManager.default.fileExists(atPath: appliance + "/vmlinuz"), "the appliance must be built first (make appliance)")
        let daemon = DaemonProcess(
            stateDirectory: directory.path + "/state", arguments: ["--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "5"])
        try await daemon.start()
        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("killed")
        let open = try await api.call(.POST, "/api/v1/sessions/\(id)/open", token: token, body: #"{"cpus":1,"memory":192,"disk":64,"version":"appliance"}"#)
        #expect(try await Self.finished(api, open, token: token) == "succeeded")
        return (daemon, id, token)
    }

    /// Waits for the operation an action answered with and returns its status.
    static func finished(_ api: APIClient, _ reply: APIClient.Reply, token: String) async throws -> String? {
        let operation = try #require((reply["operation"] as? [String: Any])?["id"] as? String, "\(reply.json)")
        for _ in 0..<10 {
            let waited = try await api.call(.GET, "/api/v1/operations/\(operation)/wait?timeout=30", token: token)
            if waited["status"] as? String != "running" { return waited["status"] as? String }
        }
        return nil
    }

    /// After a restart: the state the session shows matches the VM's qemu.
    static func consistent(_ api: APIClient, id: String, token: String) async throws -> String {
        let state = try #require(try await api.call(.GET, "/api/v1/sessions/\(id)", token: token)["state"] as? String)
        let qemu = Real.qemuProcess(for: id)
        switch state {
        case "running", "paused": #expect(qemu != nil, "a \(state) session has its qemu")
        case "open", "error", "saved": #expect(qemu == nil, "a \(state) session has no qemu")
        default: Issue.record("the session is left in \(state) after the restart")
        }
        return state
    }

    @Test("a daemon killed 10 ms or 0.3 s into start leaves a session that matches its VM, and the next action works", arguments: [10, 300])
    func killDuringStart(milliseconds: Int) async throws {
        let directory = try TemporaryDirectory("vms-e2e-kill")
        let (daemon, id, token) = try await Self.opened(directory)
        var api = APIClient(port: daemon.port)
        #expect(try await api.call(.POST, "/api/v1/sessions/\(id)/start", token: token, body: ##"{"userData":"#!/bin/sh\necho hi\n"}"##).status == 202)
        try await Task.sleep(for: .milliseconds(milliseconds))
        daemon.kill9()

        try await daemon.start()
        api = APIClient(port: daemon.port)
        let state = try await Self.consistent(api, id: id, token: token)
        // The next action: before the fix every action waited 30 s for libvirt's state-change lock and failed.
        if state == "running" {
            #expect(try await Self.finished(api, try await api.call(.POST, "/api/v1/sessions/\(id)/stop", token: token), token: token) == "succeeded")
        } else {
            let start = try await api.call(.POST, "/api/v1/sessions/\(id)/start", token: token)
            #expect(try await Self.finished(api, start, token: token) == "succeeded")
            #expect(Real.qemuProcess(for: id) != nil)
        }
        #expect(try await Self.finished(api, try await api.call(.POST, "/api/v1/sessions/\(id)/close", token: token), token: token) == "succeeded")
        #expect(Real.qemuProcess(for: id) == nil)
        try await daemon.stop()
    }

    @Test("libvirt's status file of a start killed before QEMU's pid was written (pid 0, start job) does not wedge the session")
    func unfinishedStartJobRepaired() async throws {
        let directory = try TemporaryDirectory("vms-e2e-kill-job")
        let (daemon, id, token) = try await Self.opened(directory)
        var api = APIClient(port: daemon.port)
        #expect(try await Self.finished(api, try await api.call(.POST, "/api/v1/sessions/\(id)/start", token: token), token: token) == "succeeded")
        daemon.kill9()
        if let qemu = Real.qemuProcess(for: id) { kill(qemu, SIGKILL) }
        // What libvirt 9.0 writes when a start begins and a kill 10 ms later leaves: no pid, the start job.
        // (The window is too narrow to hit on purpose; the file is made to what the issue found.)
        let status = directory.path + "/state/libvirt/run/qemu/vms-\(id).xml"
        var text = try String(contentsOfFile: status, encoding: .utf8)
        let element = try #require(text.range(of: #"<domstatus [^>]*>"#, options: .regularExpression))
        text.replaceSubrange(
            element,
            with: "<domstatus state='paused' reason='starting up' pid='0'>\n  <job type='none' async='start' phase='none' asyncStarted='0'>\n  </job>")
        try text.write(toFile: status, atomically: true, encoding: .utf8)

        try await daemon.start()
        api = APIClient(port: daemon.port)
        // Before: `paused` for ever, and every action failed after 30 s with "cannot acquire state change lock".
        let state = try await Self.consistent(api, id: id, token: token)
        #expect(state == "open" || state == "error")
        #expect(try await Self.finished(api, try await api.call(.POST, "/api/v1/sessions/\(id)/start", token: token), token: token) == "succeeded")
        #expect(Real.qemuProcess(for: id) != nil)
        #expect(try await Self.finished(api, try await api.call(.POST, "/api/v1/sessions/\(id)/close", token: token), token: token) == "succeeded")
        #expect(Real.qemuProcess(for: id) == nil)
        try await daemon.stop()
    }

    @Test("a hibernate killed early leaves no hibernation image beside the running VM: a later stop ends open, not saved")
    func killEarlyInHibernate() async throws {
        let directory = try TemporaryDirectory("vms-e2e-kill-save")
        let (daemon, id, token) = try await Self.opened(directory)
        var api = APIClient(port: daemon.port)
        #expect(try await Self.finished(api, try await api.call(.POST, "/api/v1/sessions/\(id)/start", token: token), token: token) == "succeeded")
        #expect(try await api.call(.POST, "/api/v1/sessions/\(id)/hibernate", token: token).status == 202)
        // Kill as soon as libvirt has begun the image, while qemu still runs.
        let state = directory.path + "/state"
        for _ in 0..<400 where Real.files(under: state, named: "vms-\(id).save").isEmpty {
            try await Task.sleep(for: .milliseconds(5))
        }
        daemon.kill9()

        try await daemon.start()
        api = APIClient(port: daemon.port)
        let after = try await Self.consistent(api, id: id, token: token)
        if after == "running" || after == "paused" {
            #expect(Real.files(under: state, named: "vms-\(id).save").isEmpty, "no stale image beside a live qemu")
            let stop = try await api.call(.POST, "/api/v1/sessions/\(id)/stop", token: token)
            #expect(try await Self.finished(api, stop, token: token) == "succeeded")
            #expect(try await api.call(.GET, "/api/v1/sessions/\(id)", token: token)["state"] as? String == "open")
        }
        #expect(try await Self.finished(api, try await api.call(.POST, "/api/v1/sessions/\(id)/close", token: token), token: token) == "succeeded")
        #expect(Real.qemuProcess(for: id) == nil)
        try await daemon.stop()
    }
}
}
