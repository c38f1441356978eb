import Foundation
import Testing
import VMSessionTestSupport

/// The whole foundation on real parts: the vmsessiond binary, libvirt's embedded QEMU driver, a real
/// guest (the test appliance) under TCG, driven over HTTP and followed over SSE.
extension RealGuestSuites {
@Suite("Real VM through the embedded QEMU driver", .serialized)
struct RealVMTests {
    @Test("create, open, start, pause, resume, hibernate, restore across a daemon restart, cap, keep running across a restart, survive a killed qemu, close")
    func fullSessionOnARealGuest() async throws {
        let appliance = DaemonProcess.applianceDirectory
        try #require(
            FileManager.default.fileExists(atPath: appliance + "/vmlinuz"),
            "the appliance must be built first (make appliance): \(appliance)")
        let directory = try TemporaryDirectory("vms-e2e-vm")
        let state = directory.path + "/state"
        let daemon = DaemonProcess(
            stateDirectory: state, arguments: ["--accelerator", "tcg", "--appliance-dir", appliance, "--stop-grace", "10"])
        try await daemon.start()
        defer { Self.keepArtifacts(from: state) }
        let api = APIClient(port: daemon.port)
        let (id, token) = try await api.newSession("real-vm")
        let session = "/api/v1/sessions/\(id)"
        let console = "\(state)/machines/\(id)/console.log"

        let lastEvent: Int64 = try await api.withEvents(session: id, token: token, since: 0) { log in
            // Open: a disk and a defined VM.
            #expect(try await api.call(.POST, session + "/open", token: token, body: #"{"cpus":1,"memory":256,"disk":64,"version":"appliance"}"#).status == 202)
            _ = try await log.state("open")
            let progress = await log.events.filter { $0.type == "progress" }.map { $0.payload["done"] as? Int ?? -1 }
            #expect(!progress.isEmpty && progress == progress.sorted(), "progress never goes backwards")

            // Start with user-data that keeps the guest's CPU busy, so caps and pauses can be measured.
            let userData = #"#!/bin/sh\necho user-data says hello\nwhile :; do :; done\n"#
            #expect(try await api.call(.POST, session + "/start", token: token, body: #"{"userData":"\#(userData)"}"#).status == 202)
            _ = try await log.state("running")
            try await Self.waitForConsole(console, containing: "user-data says hello")
            #expect(try String(contentsOfFile: console, encoding: .utf8).contains("VMSESSION-APPLIANCE: seed found"))
            let qemu = try #require(Self.qemuProcess(for: id), "a qemu process runs the session's VM")
            // Shares are compared with each other, measured in the same run: the machine may be busy.
            let busy = try await Self.cpuShare(of: qemu, over: .seconds(2))
            #expect(busy > 0.2, "the busy guest runs (\(busy) of a core)")

            // Pause: the guest's CPU time stops growing.
            #expect(try await api.call(.POST, session + "/pause", token: token).status == 200)
            _ = try await log.state("paused")
            let paused = try await Self.cpuShare(of: qemu, over: .seconds(2))
            #expect(paused < busy / 10, "a paused guest's CPU time stops growing (\(paused) against \(busy) running)")

            // Resume: it grows again.
            #expect(try await api.call(.POST, session + "/resume", token: token).status == 200)
            _ = try await log.next("stateChanged", after: 0) { $0["state"] as? String == "running" && $0["previous"] as? String == "paused" }
            let resumed = try await Self.cpuShare(of: qemu, over: .seconds(2))
            #expect(resumed > max(paused * 5, 0.1), "a resumed guest's CPU time grows again (\(resumed))")

            // Hibernate: a managed-save image on disk and no qemu process left.
            #expect(try await api.call(.POST, session + "/hibernate", token: token).status == 202)
            _ = try await log.state("saved")
            #expect(!Self.files(under: state, named: "vms-\(id).save").isEmpty, "the managed-save image exists")
            #expect(Self.qemuProcess(for: id) == nil, "no qemu process is left")
            return await log.events.last?.id ?? 0
        }

        // The daemon restarts while the VM is hibernated; the session comes back as it was.
        try await daemon.stop()
        try await daemon.start()
        let api2 = APIClient(port: daemon.port)
        #expect(try await api2.call(.GET, session, token: token)["state"] as? String == "saved")

        let (qemu, lastBeforeSecondRestart): (Int32, Int64) = try await api2.withEvents(session: id, token: token, lastEventID: lastEvent) { log in
            // Start restores the hibernated guest.
            #expect(try await api2.call(.POST, session + "/start", token: token).status == 202)
            _ = try await log.state("running")
            let qemu = try #require(Self.qemuProcess(for: id))

            // Cap at 25 %: the busy guest's process holds near a quarter of a core.
            let capped = try await api2.call(.PUT, session + "/execution-cap", token: token, body: #"{"cap":25}"#)
            #expect(capped.status == 200)
            let capEvent = try await log.next("executionCapChanged")
            #expect(capEvent.payload["cap"] as? Int == 25)
            #expect(capEvent.payload["reason"] as? String == "user")
            try await Task.sleep(for: .milliseconds(500))
            let share = try await Self.cpuShare(of: qemu, over: .seconds(5))
            print("measured CPU share at a 25 % cap: \(share)")
            #expect(share > 0.15 && share < 0.40, "CPU share at a 25 % cap is near 25 % (\(share))")
            return (qemu, await log.events.last?.id ?? lastEvent)
        }

        // The daemon restarts while the guest runs: the guest keeps running and stays under control.
        try await daemon.stop()
        #expect(kill(qemu, 0) == 0, "the guest survives the daemon's exit")
        try await daemon.start()
        let api3 = APIClient(port: daemon.port)
        #expect(try await api3.call(.GET, session, token: token)["state"] as? String == "running")
        try await api3.withEvents(session: id, token: token, lastEventID: lastBeforeSecondRestart) { log in
            #expect(try await api3.call(.POST, session + "/pause", token: token).status == 200)
            #expect(try await api3.call(.POST, session + "/resume", token: token).status == 200)

            // A qemu that dies moves the session out of running, with an event that says why.
            kill(qemu, SIGKILL)
            let failed = try await log.state("error", timeout: .seconds(30))
            #expect((failed.payload["reason"] as? String ?? "").contains("killed"), "\(failed.payload)")
            #expect(failed.payload["previous"] as? String == "running")

            // Close: no domain, no disks, no files of the VM remain.
            #expect(try await api3.call(.POST, session + "/close", token: token).status == 202)
            _ = try await log.state("closed")
        }
        #expect(Self.files(under: state, named: "vms-\(id)").isEmpty, "no file of the VM remains")
        #expect(!FileManager.default.fileExists(atPath: "\(state)/machines/\(id)"), "its disks are gone")
        #expect(Self.qemuProcess(for: id) == nil)
        let closed = try await api3.call(.GET, session, token: token)
        #expect(closed["state"] as? String == "closed")
        try await daemon.stop()
    }

    // MARK: Measuring the real thing

    /// The pid of the qemu process running the session's VM, found by its command line.
    static func qemuProcess(for id: String) -> Int32? {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry),
                let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
                String(decoding: data, as: UTF8.self).contains("guest=vms-\(id)")
            else { continue }
            return pid
        }
        return nil
    }

    /// CPU seconds used by a process (all threads), from /proc/PID/stat.
    static func cpuSeconds(of pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let fields = stat[stat.index(after: try #require(stat.lastIndex(of: ")")))...].split(separator: " ")
        // After the command: state is field 3, so utime (14) and stime (15) are at offsets 11 and 12.
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The share of one core the process used over `duration`.
    static func cpuShare(of pid: Int32, over duration: Duration) async throws -> Double {
        let clock = ContinuousClock()
        let startTime = clock.now
        let start = try cpuSeconds(of: pid)
        try await Task.sleep(for: duration)
        let used = try cpuSeconds(of: pid) - start
        let elapsed = startTime.duration(to: clock.now)
        return used / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    static func waitForConsole(_ path: String, containing marker: String) async throws {
        for _ in 0..<1200 {
            if let text = try? String(contentsOfFile: path, encoding: .utf8), text.contains(marker) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw DaemonError("the guest's console never showed '\(marker)'")
    }

    /// Files under `root` whose name contains `fragment`.
    static func files(under root: String, named fragment: String) -> [String] {
        let enumerator = FileManager.default.enumerator(atPath: root)
        var found: [String] = []
        while let path = enumerator?.nextObject() as? String {
            if (path as NSString).lastPathComponent.contains(fragment) { found.append(path) }
        }
        return found
    }

    /// Keeps the daemon log and console for CI to look at, when asked to (VMSESSIOND_ARTIFACTS).
    static func keepArtifacts(from state: String) {
        guard let target = ProcessInfo.processInfo.environment["VMSESSIOND_ARTIFACTS"] else { return }
        try? FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: target + "/real-vm-daemon.log")
        try? FileManager.default.copyItem(atPath: state + "/daemon.log", toPath: target + "/real-vm-daemon.log")
    }
}
}
