import Foundation
import Logging
import Synchronization
import VMSessionCore

/// The guests' networks on one remote host reached over SSH: the same sandbox a local VM gets (passt in a user
/// and network namespace of its own, pasta out to the host, the ``EgressPolicy``'s routes computed for the host's
/// own addresses, socat relaying the guest's port 80 to `api.sock`), its commands (a ``GuestNetworkPlan``) run
/// as one script on the host through the host's SSH master connection (``SSHForward/execute(_:_:)``), and the
/// host's `api.sock` forwarded to a local socket, so that the daemon's guest proxy and API probes reach a remote
/// guest exactly as a local one (``apiAddress(of:)``).
///
/// Where things are: on the host, a session's directory `<base>/<session>` (``Availability``: under the SSH user's
/// `~/.cache`, or `/tmp/vmsessiond-net-<uid>` where that path would be too long for passt's socket), holding the
/// helpers' pids and log, `net.sock` (QEMU's NIC, named in the domain XML) and `api.sock`; here, beside the VM's
/// console files, the policy the VM was defined with and the forward's local socket.
///
/// On a system libvirt (`…/system`) QEMU runs as a user of its own (``SystemQEMU``, Debian's `libvirt-qemu`), which
/// must reach `net.sock` and nothing else: the base is `/tmp/vmsessiond-sysnet-<uid>` (a home such as root's 0700
/// `/root` is not QEMU's to enter, and nothing there is opened up; `/tmp` is, and passt's own AppArmor profile lets
/// it make sockets there), its directories are QEMU's group's with mode 0710 and `net.sock` that group's with 0660
/// (``GuestNetworkPlan/SocketAccess``). A host whose SSH user cannot give a file to QEMU's group, or whose libvirt
/// confines QEMU (AppArmor without the site's rule for the base, SELinux) offers guests no network, and says why.
///
/// The helpers run detached on the host (a session of their own, no tty), so they outlive the SSH command that
/// started them, a daemon restart and a lost connection; the forward is re-added when the host connects again
/// (``reconcile(_:)``).
final class RemoteGuestNetwork: Sendable {
    /// Whether the host can run the sandbox, found when it connects (``check()``).
    enum Availability: Equatable, Sendable {
        case unknown
        /// The sessions' directories are under `base`; `runsAsRoot`: the SSH user is root; `access`: who beside the
        /// SSH user reaches a session's `net.sock` (QEMU's group on a system libvirt).
        case available(base: String, runsAsRoot: Bool, access: GuestNetworkPlan.SocketAccess = .ownerOnly)
        case unavailable(String)
    }

    let ssh: SSHForward
    let hostName: String
    /// Whether the host is a system libvirt (`…/system`): its QEMU runs as a user of its own (``SystemQEMU``).
    let isSystem: Bool
    /// This daemon's directory of a session on the host (the console's files are there too).
    let localDirectory: @Sendable (SessionID) -> String
    let logger: Logger
    private let state = Mutex<Availability>(.unknown)
    /// How long the helpers get to come up on the host.
    let startTimeoutSeconds = 10

    static let policyFile = "egress"
    static let apiSocket = "api.sock"
    /// What the host needs: Debian's `passt` (passt and pasta), `socat`, `util-linux` (unshare, setsid), `iproute2`.
    static let tools = ["passt", "pasta", "socat", "unshare", "setsid", "ip"]

    init(
        ssh: SSHForward, hostName: String, isSystem: Bool = false, localDirectory: @escaping @Sendable (SessionID) -> String,
        logger: Logger
    ) {
        self.ssh = ssh
        self.hostName = hostName
        self.isSystem = isSystem
        self.localDirectory = localDirectory
        self.logger = logger
    }

    var availability: Availability { state.withLock { $0 } }

    /// Why the host gives guests no network, or nil if it does.
    var unavailableReason: String? {
        switch availability {
        case .available: nil
        case .unknown: "The guest's network on remote host \(hostName) is not checked yet (the host is connecting)."
        case .unavailable(let reason): reason
        }
    }

    // MARK: The host

    /// Looks at what the host has for the sandbox (its tools, user namespaces, /dev/net/tun) and where the
    /// sessions' directories go; remembers and returns the answer. On a system libvirt, `capabilities` is its
    /// capabilities XML (nil if it could not be read): whom QEMU runs as, and what confines it (``SystemQEMU``).
    @discardableResult
    func check(capabilities: String? = nil) async -> Availability {
        let found: Availability
        let qemu = isSystem ? capabilities.flatMap(SystemQEMU.init(capabilitiesXML:)) : nil
        if isSystem, qemu == nil {
            found = .unavailable(
                "The guest's network on remote host \(hostName) is not offered: its system libvirt did not say which user and group "
                    + "its QEMU runs as (no DAC base label in its capabilities), so the sandbox's socket cannot be opened to QEMU alone.")
        } else {
            do throws(VMSessionError) {
                let answer = try await ssh.execute(Self.probeScript(system: isSystem), qemu.map { ["\($0.gid)"] } ?? [])
                found = Self.availability(probeAnswer: answer, hostName: hostName, systemQEMU: qemu)
            } catch {
                found = .unavailable("The guest's network on remote host \(hostName) could not be checked: \(error.message)")
            }
        }
        state.withLock { $0 = found }
        if case .unavailable(let reason) = found { logger.notice("remote guests get no network", metadata: ["why": "\(reason)"]) }
        return found
    }

    /// Prints `missing TOOL…`, `nouserns`, `notun`, or `ok UID HOME`. For a system libvirt (`system`; its QEMU's gid
    /// is `$1`), before `ok`: the SSH user's name and groups, the name of QEMU's group, and whether the site's AppArmor
    /// additions for libvirt's QEMU (``appArmorLocalFile``) name the sessions' base (``systemBase(uid:)``).
    static func probeScript(system: Bool) -> String {
        let common = #"""
            missing=
            for tool in \#(tools.joined(separator: " ")); do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
            if [ -n "$missing" ]; then echo "missing$missing"; exit 0; fi
            unshare --user --map-root-user --net true >/dev/null 2>&1 || { echo nouserns; exit 0; }
            [ -r /dev/net/tun ] && [ -w /dev/net/tun ] || { echo notun; exit 0; }

            """#
        let systemLines = #"""
            echo "user $(id -un)"
            echo "groups $(id -G)"
            echo "qemu-group $(getent group "$1" | cut -d: -f1)"
            if grep -qsF -- "\#(systemBasePrefix)$(id -u)/" \#(appArmorLocalFile); then echo "apparmor-rule yes"; else echo "apparmor-rule no"; fi

            """#
        return common + (system ? systemLines : "") + #"echo "ok $(id -u) ${HOME:-}""# + "\n"
    }

    /// Where a site adds rules to the AppArmor profile libvirt gives each QEMU (Debian's `libvirt-daemon-system`).
    static let appArmorLocalFile = "/etc/apparmor.d/local/abstractions/libvirt-qemu"
    static let systemBasePrefix = "/tmp/vmsessiond-sysnet-"

    /// The sessions' directories on a system libvirt host (see the type's comment): of the SSH user `uid`, in `/tmp`.
    /// Not the session hosts' `/tmp` fallback, so that one user reaching a host's session and system libvirt keeps
    /// the two apart (their modes differ).
    static func systemBase(uid: String) -> String { systemBasePrefix + uid }

    /// The rule a site adds to ``appArmorLocalFile`` so that an AppArmor-confined QEMU may connect to the sandbox.
    static func appArmorRule(uid: String) -> String { "  \(systemBase(uid: uid))/*/net.sock rw," }

    /// What the probe's answer means (pure); `systemQEMU`: what the host's system libvirt said of its QEMU.
    static func availability(probeAnswer: String, hostName: String, systemQEMU: SystemQEMU? = nil) -> Availability {
        let lines = probeAnswer.split(separator: "\n").map(String.init)
        let line = lines.last ?? ""
        let words = line.split(separator: " ", maxSplits: 2).map(String.init)
        let prefix = "Remote host \(hostName) cannot give guests a network (egress sandbox and guest API)"
        switch words.first ?? "" {
        case "missing":
            return .unavailable(
                "\(prefix): it lacks \(words.dropFirst().joined(separator: " ")); install Debian's passt, socat, util-linux and iproute2 there.")
        case "nouserns":
            return .unavailable("\(prefix): its SSH user cannot make user namespaces (unshare --user --map-root-user --net).")
        case "notun":
            return .unavailable("\(prefix): its SSH user cannot read and write /dev/net/tun, which pasta needs.")
        case "ok" where words.count >= 2 && words[1].allSatisfy(\.isNumber):
            guard let systemQEMU else {
                return .available(base: base(home: words.count > 2 ? words[2] : "", uid: words[1]), runsAsRoot: words[1] == "0")
            }
            return systemAvailability(uid: words[1], facts: lines.dropLast(), qemu: systemQEMU, prefix: prefix)
        default:
            return .unavailable("\(prefix): its check answered '\(line.prefix(200))'.")
        }
    }

    /// On a system libvirt: whether QEMU may be given the session's socket, and how (pure). `facts` are the probe's
    /// lines before `ok` (`user NAME`, `groups GID…`, `qemu-group NAME`, `apparmor-rule yes|no`).
    static func systemAvailability(uid: String, facts: some Sequence<String>, qemu: SystemQEMU, prefix: String) -> Availability {
        var fact: [String: String] = [:]
        for line in facts {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            if let key = parts.first { fact[key] = parts.count > 1 ? parts[1] : "" }
        }
        let user = fact["user"].flatMap { $0.isEmpty ? nil : $0 } ?? "uid \(uid)"
        let group = fact["qemu-group"].flatMap { $0.isEmpty ? nil : $0 } ?? "\(qemu.gid)"
        if let model = qemu.confinement.first(where: { $0 != "apparmor" }) {
            return .unavailable(
                "\(prefix): its libvirt confines QEMU with \(model == "selinux" ? "SELinux (sVirt)" : model), under which QEMU may not "
                    + "connect to the sandbox's socket; the guest network is offered on a system libvirt whose security driver is "
                    + "AppArmor (with a rule for the sandbox) or none.")
        }
        if qemu.isConfinedByAppArmor, fact["apparmor-rule"] != "yes" {
            return .unavailable(
                "\(prefix): its libvirt confines QEMU with AppArmor, whose libvirt-qemu profile lets QEMU connect to no socket of "
                    + "the sandbox; allow it there: add the line '\(appArmorRule(uid: uid).trimmingCharacters(in: .whitespaces))' to "
                    + "\(appArmorLocalFile) (VMs started afterwards get it).")
        }
        let base = systemBase(uid: uid)
        if UInt32(uid) == qemu.uid { return .available(base: base, runsAsRoot: uid == "0", access: .ownerOnly) }
        let groups = Set((fact["groups"] ?? "").split(separator: " ").compactMap { UInt32($0) })
        guard uid == "0" || groups.contains(qemu.gid) else {
            return .unavailable(
                "\(prefix): its system libvirt runs QEMU as uid \(qemu.uid), group \(group), which alone must reach the sandbox's "
                    + "socket, and its SSH user \(user) cannot give a file to that group: make it a member (usermod -a -G \(group) "
                    + "\(user)) or reach the host as root.")
        }
        return .available(base: base, runsAsRoot: uid == "0", access: .group(qemu.gid))
    }

    /// The sessions' directories on the host: `~/.cache/vmsessiond-net` (where a session libvirt keeps its own
    /// runtime files when there is no `$XDG_RUNTIME_DIR`, which logind would remove at the user's last logout),
    /// unless a session's `net.sock` there would be too long for passt or QEMU; then `/tmp/vmsessiond-net-<uid>`
    /// (the up script checks it is the user's own).
    static func base(home: String, uid: String) -> String {
        let preferred = home + "/.cache/vmsessiond-net"
        let longest = preferred + "/" + String(repeating: "x", count: 36) + "/" + GuestNetwork.netSocket
        let usable = home.hasPrefix("/") && !preferred.contains(",") && (try? DomainXML.checkPath(preferred)) != nil
        if usable, longest.utf8.count <= GuestNetwork.maximumSocketPath { return preferred }
        return "/tmp/vmsessiond-net-\(uid)"
    }

    /// The session's directory on the host, if the host gives guests a network.
    func remoteDirectory(for id: SessionID) -> String? {
        guard case .available(let base, _, _) = availability else { return nil }
        return base + "/\(id)"
    }

    // MARK: A session's network

    /// Records the policy the VM is defined with (here: the host is asked at each start); returns the host's
    /// `net.sock` for QEMU's NIC, or nil (and forgets any policy) if the host gives guests no network.
    func prepare(_ id: SessionID, policy: EgressPolicy?) throws(VMSessionError) -> String? {
        let file = localDirectory(id) + "/" + Self.policyFile
        guard let policy, let directory = remoteDirectory(for: id) else {
            try? FileManager.default.removeItem(atPath: file)
            return nil
        }
        do {
            try FileManager.default.createDirectory(atPath: localDirectory(id), withIntermediateDirectories: true)
            try Data(policy.rawValue.utf8).write(to: URL(fileURLWithPath: file), options: .atomic)
        } catch {
            throw VMSessionError(.ioError, "Cannot record the guest network's policy in \(file).", cause: error)
        }
        return directory + "/" + GuestNetwork.netSocket
    }

    /// The policy the VM was defined with, or nil if it has no network.
    func policy(of id: SessionID) -> EgressPolicy? {
        guard let data = FileManager.default.contents(atPath: localDirectory(id) + "/" + Self.policyFile) else { return nil }
        return EgressPolicy(rawValue: String(decoding: data, as: UTF8.self))
    }

    /// Where the daemon reaches the guest's port 80: the local end of the forward (while the VM runs).
    func apiAddress(of id: SessionID) -> GuestAPIAddress? {
        policy(of: id) == nil ? nil : .unixSocket(localAPISocketPath(for: id))
    }

    /// Beside the VM's files when the path is short enough for a forward (``SSHForward/localPath(_:else:)``), else
    /// under the short socket directory.
    func localAPISocketPath(for id: SessionID) -> String {
        SSHForward.localPath(localDirectory(id) + "/" + Self.apiSocket, else: LibvirtHypervisor.shortSocketDirectory + "/\(id).remote-api")
    }

    /// Starts the session's sandbox on the host unless it runs (with the policy's rules for the host's addresses
    /// now), and forwards its API socket here; returns when QEMU can connect. Nothing for a VM without a network.
    func up(_ id: SessionID) async throws(VMSessionError) {
        guard let policy = policy(of: id) else { return }
        guard case .available(_, let runsAsRoot, let access) = availability, let directory = remoteDirectory(for: id) else {
            throw VMSessionError(.notSupported, unavailableReason ?? "The guest's network is not available on \(hostName).")
        }
        // One round trip tells whether it runs, and the host's addresses for the rules if it does not.
        let status = try await ssh.execute(
            "dir=\(Shell.quote(directory))\n\(GuestNetworkPlan.functions)\n"
                + #"if isup; then echo up; else ip -4 -o addr show | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p'; fi"#)
        let lines = status.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        if lines.first != "up" {
            let addresses = lines.filter { GuestEgressRules.isIPv4($0) && !$0.hasPrefix("127.") }
            let plan = GuestNetworkPlan(
                directory: directory, rules: GuestEgressRules(policy: policy, hostAddresses: addresses), runsAsRoot: runsAsRoot,
                access: access)
            let answer = try await ssh.execute(plan.upScript(timeoutSeconds: startTimeoutSeconds))
            guard answer.contains("up") else {
                throw VMSessionError(.hypervisorError, "The guest's network on \(hostName) did not come up: \(answer.prefix(600))")
            }
        }
        let local = localAPISocketPath(for: id)
        let socketDirectory = (local as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(
                atPath: socketDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw VMSessionError(.ioError, "Cannot create the socket directory \(socketDirectory).", cause: error)
        }
        try await ssh.forward(local, to: directory + "/" + GuestNetwork.apiSocket)
    }

    /// Cancels the API's forward and ends the helpers on the host (their directory stays with the VM's definition).
    /// Best effort: a host that cannot be reached now is reconciled when it connects again.
    func down(_ id: SessionID) async {
        guard let directory = remoteDirectory(for: id) else { return }
        await ssh.cancel(localAPISocketPath(for: id), to: directory + "/" + GuestNetwork.apiSocket)
        do throws(VMSessionError) {
            _ = try await ssh.execute(GuestNetworkPlan.downScript(directory: directory))
        } catch {
            logger.warning("cannot end a guest's network helpers on the host", metadata: ["session": "\(id)", "error": "\(error)"])
        }
    }

    /// Ends the helpers and removes the session's directory on the host (and the sessions' parent directory when it
    /// was the last), and the policy here.
    func remove(_ id: SessionID) async throws(VMSessionError) {
        try? FileManager.default.removeItem(atPath: localDirectory(id) + "/" + Self.policyFile)
        guard case .available(let base, _, _) = availability, let directory = remoteDirectory(for: id) else { return }
        await ssh.cancel(localAPISocketPath(for: id), to: directory + "/" + GuestNetwork.apiSocket)
        _ = try await ssh.execute(GuestNetworkPlan.removeScript(directory: directory, parent: base))
    }

    /// After the host connected (the daemon started, or the host returned): the sandbox of each VM that runs gets
    /// its forward back (and its helpers, if they died); the helpers of a VM that stopped meanwhile end; the
    /// directory of a VM no longer defined goes. `machines` holds every VM of a session on the host: running or not.
    func reconcile(_ machines: [SessionID: Bool]) async {
        guard case .available(let base, _, _) = availability else { return }
        let listing: String
        do throws(VMSessionError) {
            listing = try await ssh.execute("ls -1 -- \(Shell.quote(base)) 2>/dev/null; true")
        } catch {
            logger.warning("cannot list the guests' networks on the host", metadata: ["error": "\(error)"])
            return
        }
        for id in listing.split(separator: "\n").compactMap({ SessionID(String($0)) }) {
            switch machines[id] {
            case true?:
                do throws(VMSessionError) {
                    try await up(id)
                } catch {
                    logger.warning("cannot bring a running guest's network back", metadata: ["session": "\(id)", "error": "\(error)"])
                }
            case false?:
                await down(id)
            case nil:
                do throws(VMSessionError) {
                    try await remove(id)
                } catch {
                    logger.warning("cannot remove a guest network of no VM", metadata: ["session": "\(id)", "error": "\(error)"])
                }
            }
        }
    }
}
