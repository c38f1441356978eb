import Foundation

/// How this daemon runs, for the start-up log and `GET /api/v1` (`mode`): as the desktop user or as root,
/// which kind of libvirt it drives, and which mechanism holds VMs to their execution cap. A page or an
/// admin reads it to know whether caps and the idle controller can work here, and why not.
public struct DaemonMode: Codable, Equatable, Sendable {
    /// `user` (an unprivileged daemon, e.g. the systemd user unit) or `system` (root).
    public var mode: String
    /// `embedded` (qemu:///embed), `session`, `system`, `test` or `remote`.
    public var libvirt: String
    public var capMechanism: CapMechanismKind
    /// The cgroup directory in use, or why no mechanism is available.
    public var capDetail: String

    public init(mode: String, libvirt: String, capMechanism: CapMechanismKind, capDetail: String) {
        self.mode = mode
        self.libvirt = libvirt
        self.capMechanism = capMechanism
        self.capDetail = capDetail
    }

    /// The kind of libvirt connection a URI names.
    public static func libvirtKind(of uri: String) -> String {
        if uri.hasPrefix("test:") { return "test" }
        if uri.hasPrefix("qemu:///embed") { return "embedded" }
        if uri.hasPrefix("qemu:///session") { return "session" }
        if uri.hasPrefix("qemu:///system") { return "system" }
        return "remote"
    }
}
