import Foundation
import Testing
@testable import VMSessionHypervisor

/// The guest network on a system libvirt host (issue 22): what libvirt's capabilities say of its QEMU, what the
/// host's probe answers mean, and the modes the sandbox's directories and socket get (run here by a real `sh`).
@Suite("Guest network on a system libvirt host", .serialized)
struct SystemGuestNetworkTests {
    /// The host part of `virsh -c qemu:///system capabilities` on Debian 12 (libvirt 9.0), without AppArmor.
    static let debianCapabilities = """
        <capabilities>
          <host>
            <uuid>5f1c1a8e-0000-0000-0000-000000000000</uuid>
            <cpu><arch>x86_64</arch><model>Skylake-Client-IBRS</model></cpu>
            <secmodel>
              <model>none</model>
              <doi>0</doi>
            </secmodel>
            <secmodel>
              <model>dac</model>
              <doi>0</doi>
              <baselabel type='kvm'>+999:+995</baselabel>
              <baselabel type='qemu'>+999:+995</baselabel>
            </secmodel>
          </host>
          <guest><os_type>hvm</os_type></guest>
        </capabilities>
        """

    static func capabilities(primary: String, dac: String?) -> String {
        var xml = "<capabilities><host><secmodel><model>\(primary)</model><doi>0</doi></secmodel>"
        if let dac { xml += "<secmodel><model>dac</model><doi>0</doi><baselabel type=\"qemu\">\(dac)</baselabel></secmodel>" }
        return xml + "</host></capabilities>"
    }

    @Test("libvirt's capabilities name the user and group its QEMU runs as (DAC's base label) and what confines it beyond them")
    func capabilitiesParsing() {
        #expect(SystemQEMU(capabilitiesXML: Self.debianCapabilities) == SystemQEMU(uid: 999, gid: 995, confinement: []))
        #expect(
            SystemQEMU(capabilitiesXML: Self.capabilities(primary: "apparmor", dac: "+64055:+64055"))
                == SystemQEMU(uid: 64055, gid: 64055, confinement: ["apparmor"]))
        #expect(SystemQEMU(capabilitiesXML: Self.capabilities(primary: "selinux", dac: "+107:+107"))?.confinement == ["selinux"])
        #expect(SystemQEMU(capabilitiesXML: Self.capabilities(primary: "none", dac: nil)) == nil, "no DAC label: whom to open to is unknown")
        #expect(SystemQEMU(capabilitiesXML: Self.capabilities(primary: "none", dac: "libvirt-qemu:kvm")) == nil, "only numbers are taken")
        #expect(SystemQEMU(capabilitiesXML: "") == nil)
    }

    static let qemu = SystemQEMU(uid: 999, gid: 995, confinement: [])

    static func availability(_ facts: String, ok: String, qemu: SystemQEMU = qemu) -> RemoteGuestNetwork.Availability {
        RemoteGuestNetwork.availability(probeAnswer: facts + "\n" + ok + "\n", hostName: "pool", systemQEMU: qemu)
    }

    @Test("on a system libvirt the sessions' directories go to /tmp/vmsessiond-sysnet-UID, opened to QEMU's group where the SSH user can give files to it (root, or a member), owner-only where QEMU runs as the SSH user")
    func systemHostAccess() {
        let root = Self.availability("user root\ngroups 0\nqemu-group libvirt-qemu\napparmor-rule no", ok: "ok 0 /root")
        #expect(root == .available(base: "/tmp/vmsessiond-sysnet-0", runsAsRoot: true, access: .group(995)))
        let member = Self.availability("user ada\ngroups 1001 27 995\nqemu-group libvirt-qemu\napparmor-rule no", ok: "ok 1001 /home/ada")
        #expect(member == .available(base: "/tmp/vmsessiond-sysnet-1001", runsAsRoot: false, access: .group(995)))
        let same = Self.availability("user qemu\ngroups 107\nqemu-group qemu\napparmor-rule no", ok: "ok 107 /var/lib/qemu",
            qemu: SystemQEMU(uid: 107, gid: 107, confinement: []))
        #expect(same == .available(base: "/tmp/vmsessiond-sysnet-107", runsAsRoot: false, access: .ownerOnly))
        // The session libvirt's answer is what it was: the user's ~/.cache, owner only.
        #expect(
            RemoteGuestNetwork.availability(probeAnswer: "ok 1001 /home/ada\n", hostName: "pool")
                == .available(base: "/home/ada/.cache/vmsessiond-net", runsAsRoot: false, access: .ownerOnly))
    }

    @Test("a system host whose SSH user cannot give a file to QEMU's group, or whose libvirt confines QEMU (AppArmor with no rule for the sandbox, SELinux), offers no guest network, and the reason says what to do")
    func systemHostRefusals() {
        let outsider = Self.availability("user ada\ngroups 1001 27 112\nqemu-group libvirt-qemu\napparmor-rule no", ok: "ok 1001 /home/ada")
        guard case .unavailable(let why) = outsider else { Issue.record("\(outsider)"); return }
        #expect(why.contains("pool") && why.contains("usermod -a -G libvirt-qemu ada") && why.contains("as root"), "\(why)")

        let confined = SystemQEMU(uid: 64055, gid: 64055, confinement: ["apparmor"])
        let noRule = Self.availability("user root\ngroups 0\nqemu-group libvirt-qemu\napparmor-rule no", ok: "ok 0 /root", qemu: confined)
        guard case .unavailable(let apparmor) = noRule else { Issue.record("\(noRule)"); return }
        #expect(apparmor.contains("AppArmor") && apparmor.contains("/tmp/vmsessiond-sysnet-0/*/net.sock rw,"), "\(apparmor)")
        #expect(apparmor.contains("/etc/apparmor.d/local/abstractions/libvirt-qemu"), "\(apparmor)")
        let withRule = Self.availability("user root\ngroups 0\nqemu-group libvirt-qemu\napparmor-rule yes", ok: "ok 0 /root", qemu: confined)
        #expect(withRule == .available(base: "/tmp/vmsessiond-sysnet-0", runsAsRoot: true, access: .group(64055)))

        let selinux = Self.availability(
            "user root\ngroups 0\nqemu-group qemu\napparmor-rule no", ok: "ok 0 /root", qemu: SystemQEMU(uid: 107, gid: 107, confinement: ["selinux"]))
        guard case .unavailable(let svirt) = selinux else { Issue.record("\(selinux)"); return }
        #expect(svirt.contains("SELinux"), "\(svirt)")
        // A host lacking the tools says so first, whatever its libvirt.
        if case .available = Self.availability("", ok: "missing passt") { Issue.record("no tools, no network") }
    }

    @Test("the system probe run by a real sh on this machine: its user, groups and QEMU's group's name come back, and root gets the sandbox opened to that group")
    func systemProbeRuns() throws {
        guard geteuid() == 0, let group = getgrnam("libvirt-qemu") else { return }  // make deps makes libvirt-qemu
        let gid = group.pointee.gr_gid
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", RemoteGuestNetwork.probeScript(system: true), "vmsessiond", "\(gid)"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let answer = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(answer.contains("user root\n") && answer.contains("qemu-group libvirt-qemu\n"), "\(answer)")
        let found = RemoteGuestNetwork.availability(
            probeAnswer: answer, hostName: "here", systemQEMU: SystemQEMU(uid: 999_999, gid: gid, confinement: []))
        if answer.hasPrefix("missing") || answer.contains("nouserns") || answer.contains("notun") { return }  // no sandbox tools here
        #expect(found == .available(base: "/tmp/vmsessiond-sysnet-0", runsAsRoot: true, access: .group(gid)), "\(answer)")
    }

    @Test("the permission plan, run by a real sh: opened to QEMU's group, the directories are that group's with 0710 and net.sock with 0660 while the API socket stays 0600; owner-only keeps 0700; a user outside the group cannot apply it")
    func permissionPlan() throws {
        guard geteuid() == 0 else { return }  // chgrp to any group, and the check as another user, need root
        let top = "/tmp/vms-perm-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: top) }
        let gid: UInt32 = 4242
        for access in [GuestNetworkPlan.SocketAccess.group(gid), .ownerOnly] {
            let base = top + "/\(access == .ownerOnly ? "owner" : "group")"
            let dir = base + "/session"
            let socketCommands = access.netSocketCommands ?? "true"
            let script = """
                set -e
                umask 077
                base='\(base)'; dir='\(dir)'
                mkdir -p -- "$dir"
                \(access.directoryCommands)
                python3 -c 'import socket, sys
                for name in sys.argv[1:]: socket.socket(socket.AF_UNIX).bind(name)' "$dir/net.sock" "$dir/api.sock"
                \(socketCommands)
                """
            let (status, output) = try GuestNetworkPlanTests.sh(script)
            #expect(status == 0, "\(output)")
            let (directoryMode, socketMode, group): (Int, Int, UInt32) =
                switch access {
                case .ownerOnly: (0o700, 0o700, 0)
                case .group(let gid): (0o710, 0o660, gid)
                }
            for path in [base, dir] {
                #expect(try Self.mode(path) == (directoryMode, group), "\(path)")
            }
            #expect(try Self.mode(dir + "/net.sock") == (socketMode, group))
            #expect(try Self.mode(dir + "/api.sock") == (0o700, 0), "the API's socket is not opened to anyone")
        }
        // A user that is not in the group cannot give its directories to it: the up script stops there.
        let stranger = top + "/stranger"
        try FileManager.default.createDirectory(atPath: stranger, withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: top)
        #expect(chown(stranger, 65534, 65534) == 0)
        let script = "base='\(stranger)/base'; dir=\"$base/session\"; mkdir -p -- \"$dir\" && \(GuestNetworkPlan.SocketAccess.group(gid).directoryCommands)"
        let (status, _) = try GuestNetworkPlanTests.sh(
            "exec setpriv --reuid=65534 --regid=65534 --clear-groups /bin/sh -c " + Shell.quote(script))
        #expect(status != 0, "chgrp to a group the user is not in fails")
    }

    static func mode(_ path: String) throws -> (Int, UInt32) {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw CocoaError(.fileNoSuchFile) }
        return (Int(info.st_mode & 0o7777), info.st_gid)
    }
}
