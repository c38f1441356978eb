import Foundation

/// Repairs the embedded QEMU driver's runtime state that a daemon killed with SIGKILL in the middle of a
/// `start` leaves behind, before libvirt loads it.
///
/// libvirt 9.0 writes a domain's status file (`<root>/run/qemu/<name>.xml`) when a start begins, with
/// `pid='0'` and the start job in it, and fills in the pid only once QEMU is launched. Loaded again, such a
/// file makes libvirt believe the domain is active (paused, "starting up") although nothing runs, and it
/// skips the reconnection that would clean up (it only reconnects to domains with a pid); the restored
/// start job then holds the domain's state-change lock forever. The same happens when the pid is one of a
/// process that is gone. Only the daemon that holds the state directory's lock calls this, so no libvirt
/// uses the root meanwhile: such a status file is removed (after killing a QEMU that its pid file names,
/// if that QEMU still runs for this domain), and libvirt then sees a defined, shut-off domain. A QEMU that
/// libvirt had started to probe capabilities when the daemon was killed is killed too.
public enum EmbeddedRootRepair {
    /// Returns a line per repair made.
    public static func repair(root: String) -> [String] {
        var repairs = killProbes(root: root)
        let directory = root + "/run/qemu"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return repairs }
        for file in names where file.hasSuffix(".xml") {
            let path = directory + "/" + file
            let domain = String(file.dropLast(4))
            guard let text = try? String(contentsOfFile: path, encoding: .utf8), let pid = statusPID(text) else { continue }
            if pid > 0, isQEMU(pid, of: domain) { continue }  // libvirt reconnects, and finishes or kills it
            // A QEMU launched before its pid reached the status file: its own pid file names it.
            if let launched = pidFile(directory + "/" + domain + ".pid"), launched > 0, isQEMU(launched, of: domain) {
                kill(launched, SIGKILL)
                waitForExit(launched)
                repairs.append("killed QEMU \(launched) of \(domain), whose start never finished")
            }
            for leftover in [path, directory + "/" + domain + ".pid"] { try? FileManager.default.removeItem(atPath: leftover) }
            repairs.append("removed the status file of \(domain) (pid \(pid), no QEMU)")
        }
        return repairs
    }

    /// Kills the QEMU processes libvirt starts to probe QEMU's capabilities (`-machine none`, a QMP socket
    /// under `<root>/lib/qemu/qmp-…`) that a daemon killed during the probe left running for good.
    public static func killProbes(root: String) -> [String] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        let marker = "unix:\(root)/lib/qemu/qmp-"
        var repairs: [String] = []
        for entry in entries {
            guard let pid = Int32(entry), pid != getpid(),
                let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty
            else { continue }
            let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard arguments.first?.contains("qemu-system") == true, arguments.contains(where: { $0.hasPrefix(marker) }) else { continue }
            kill(pid, SIGKILL)
            repairs.append("killed QEMU \(pid), a capability probe of an earlier run")
        }
        return repairs
    }

    /// The `pid` attribute of the status file's `<domstatus>` element.
    static func statusPID(_ text: String) -> Int32? {
        guard let tag = text.range(of: #"<domstatus[^>]*>"#, options: .regularExpression) else { return nil }
        let element = text[tag]
        guard let attribute = element.range(of: #"pid=['"][0-9]+['"]"#, options: .regularExpression) else { return nil }
        return Int32(element[attribute].dropFirst(5).dropLast())
    }

    static func pidFile(_ path: String) -> Int32? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Whether `pid` is a live QEMU running `domain` (its command line names the guest).
    static func isQEMU(_ pid: Int32, of domain: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return arguments.contains { $0.hasPrefix("guest=\(domain),") || $0 == "guest=\(domain)" } && !isZombie(pid)
    }

    private static func isZombie(_ pid: Int32) -> Bool {
        (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.contains(") Z ") == true
    }

    /// Up to 2 s for a killed process to be gone (or only a zombie awaiting its parent).
    private static func waitForExit(_ pid: Int32) {
        for _ in 0..<100 where kill(pid, 0) == 0 && !isZombie(pid) {
            usleep(20_000)
        }
    }
}
