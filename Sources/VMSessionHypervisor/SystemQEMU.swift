import Foundation

/// What a system libvirt host (`…/system`) says of the QEMU processes it runs, as far as a guest's network sandbox
/// needs it: the user and group QEMU runs as, and the security models that confine it beyond them.
///
/// Why it exists: on a system libvirt QEMU does not run as the SSH user who starts the sandbox's helpers (as it does
/// on a session libvirt) but as qemu.conf's `user`/`group` (Debian: `libvirt-qemu`), so the sandbox's `net.sock`
/// must be opened to that group (``GuestNetworkPlan/SocketAccess``); and a QEMU that AppArmor or SELinux confines may
/// be refused that socket whatever its modes. libvirt's own answer is read (its capabilities' `<secmodel>`s: the
/// DAC model's base label `+UID:+GID`, and `apparmor`/`selinux`) rather than qemu.conf, because it is what the running
/// libvirtd uses (its defaults, its configuration wherever it is), and it is one call on the connection the daemon
/// already has.
struct SystemQEMU: Equatable, Sendable {
    let uid: UInt32
    let gid: UInt32
    /// The security models beside DAC that confine QEMU (`apparmor`, `selinux`); empty when libvirt's primary model
    /// is `none`.
    let confinement: [String]

    init(uid: UInt32, gid: UInt32, confinement: [String]) {
        self.uid = uid
        self.gid = gid
        self.confinement = confinement
    }

    /// Reads the host's `<secmodel>` elements of `virConnectGetCapabilities`; nil when they name no DAC base label
    /// for QEMU guests (then the daemon cannot know whom to open the socket to).
    init?(capabilitiesXML xml: String) {
        var label: (uid: UInt32, gid: UInt32)?
        var confinement: [String] = []
        for section in Self.elements("secmodel", in: xml) {
            guard let model = Self.elements("model", in: section).first?.trimmingCharacters(in: .whitespaces) else { continue }
            switch model {
            case "dac":
                label = Self.baseLabel(in: section, type: "qemu") ?? Self.baseLabel(in: section, type: "kvm")
            case "none", "":
                break
            default:
                confinement.append(model)
            }
        }
        guard let label else { return nil }
        self.init(uid: label.uid, gid: label.gid, confinement: confinement)
    }

    var isConfinedByAppArmor: Bool { confinement.contains("apparmor") }

    /// The text inside each `<name>…</name>` (no nesting of the same name; what libvirt's capabilities are).
    private static func elements(_ name: String, in text: String) -> [String] {
        var found: [String] = []
        var rest = Substring(text)
        while let open = rest.range(of: "<\(name)>"), let close = rest.range(of: "</\(name)>", range: open.upperBound..<rest.endIndex) {
            found.append(String(rest[open.upperBound..<close.lowerBound]))
            rest = rest[close.upperBound...]
        }
        return found
    }

    /// `<baselabel type='TYPE'>+UID:+GID</baselabel>` (either quote) as numbers.
    private static func baseLabel(in section: String, type: String) -> (uid: UInt32, gid: UInt32)? {
        for quote in ["'", "\""] {
            let open = "<baselabel type=\(quote)\(type)\(quote)>"
            guard let start = section.range(of: open), let end = section.range(of: "</baselabel>", range: start.upperBound..<section.endIndex)
            else { continue }
            let parts = section[start.upperBound..<end.lowerBound].trimmingCharacters(in: .whitespaces).split(separator: ":")
            guard parts.count == 2, parts.allSatisfy({ $0.hasPrefix("+") }),
                let uid = UInt32(parts[0].dropFirst()), let gid = UInt32(parts[1].dropFirst())
            else { return nil }
            return (uid, gid)
        }
        return nil
    }
}
