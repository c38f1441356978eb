import Foundation
import Synchronization
import VMSessionCore

/// Host-local Unix sockets of a `qemu+ssh://` host reached from the daemon's machine through the same SSH
/// transport libvirt uses: one OpenSSH master connection per host (its control socket in the host's state
/// directory), and on it one forward per socket (`-O forward -L local:remote`), added when a VM starts and
/// cancelled when it stops. OpenSSH forwards Unix sockets both ends; a `qemu+tls://` host has no such
/// transport, so it gets no forwarder (its display and guest network answer `not_supported`). The same master
/// runs the commands of the guests' network sandboxes on the host (``execute(_:_:)``).
final class SSHForward: Sendable {
    /// How to run ssh for the host: the URI's user, host, port, key file and `command` (libvirt's own
    /// parameters for its ssh transport).
    struct Target: Equatable, Sendable {
        var program: String
        var user: String?
        var host: String
        var port: Int?
        var keyfile: String?
        var verifyHostKey: Bool

        /// The target of a `…+ssh://` URI, or nil for any other transport.
        init?(uri: String) {
            guard let components = URLComponents(string: uri), let scheme = components.scheme, scheme.hasSuffix("+ssh"),
                let host = components.host, !host.isEmpty
            else { return nil }
            let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
            self.program = query["command"].flatMap { $0.isEmpty ? nil : $0 } ?? "ssh"
            self.user = components.user
            self.host = host
            self.port = components.port
            self.keyfile = query["keyfile"].flatMap { $0.isEmpty ? nil : $0 }
            self.verifyHostKey = query["no_verify"] != "1"
        }

        /// The options every call gives ssh, before the control arguments and the host.
        func arguments(control: String) -> [String] {
            var arguments = ["-S", control, "-o", "BatchMode=yes", "-o", "StreamLocalBindUnlink=yes", "-o", "StreamLocalBindMask=0177"]
            if let port { arguments += ["-p", "\(port)"] }
            if let user { arguments += ["-l", user] }
            if let keyfile { arguments += ["-i", keyfile] }
            if !verifyHostKey { arguments += ["-o", "StrictHostKeyChecking=no"] }
            return arguments
        }
    }

    let target: Target
    /// The master's control socket.
    let control: String
    let log: String
    /// The master's pid once known, and whether a call is starting it (others wait for that one).
    private let master = Mutex<(pid: Int32?, starting: Bool)>((nil, false))

    init(target: Target, directory: String) {
        self.target = target
        self.control = directory + "/ssh.ctl"
        self.log = directory + "/ssh.log"
    }

    deinit {
        if let pid = master.withLock({ $0.pid }) { kill(pid, SIGTERM) }
        unlink(control)
    }

    /// The local end of a forward: `beside` (in the VM's own directory) when it is short enough, else `fallback`
    /// (under the daemon's short socket directory). Shorter than `sun_path` allows (``GuestNetwork/maximumSocketPath``,
    /// as for passt's): at exactly 107 bytes (a state directory `/tmp/vms-e2e-remote-netstop-XXXXXXXX/state`) a
    /// forward's socket was made but the guest API's probes through it never answered, while 103 bytes did. Every
    /// forward (the guest API's, the display's) takes its local path from here.
    static func localPath(_ beside: String, else fallback: String) -> String {
        beside.utf8.count <= GuestNetwork.maximumSocketPath ? beside : fallback
    }

    /// Forwards the local socket `local` to `remote` on the host, starting the master connection if needed.
    func forward(_ local: String, to remote: String) async throws(VMSessionError) {
        try await ensureMaster()
        // A master adopted from an earlier run of the daemon may hold this forward still: the master would take the
        // request as done and keep listening on a socket unlinked below. It is cancelled first (an error if none).
        _ = try? await ssh(["-O", "cancel", "-L", "\(local):\(remote)", "--", target.host])
        unlink(local)
        _ = try await ssh(["-O", "forward", "-L", "\(local):\(remote)", "--", target.host])
    }

    /// Cancels the forward of `local` (best effort) and removes its socket.
    func cancel(_ local: String, to remote: String) async {
        if master.withLock({ $0.pid }) != nil {
            _ = try? await ssh(["-O", "cancel", "-L", "\(local):\(remote)", "--", target.host])
        }
        unlink(local)
    }

    /// Runs `script` with `sh` on the host (its positional parameters `arguments`) over the master connection,
    /// started if needed: how a guest's network sandbox is started on the host (``RemoteGuestNetwork``). Returns
    /// what it printed on standard output; throws `hypervisorError` with what it printed on standard error.
    func execute(_ script: String, _ arguments: [String] = []) async throws(VMSessionError) -> String {
        try await ensureMaster()
        // ssh hands the host's login shell one command line: every word is quoted for it.
        let command = (["sh", "-c", script, "vmsessiond"] + arguments).map(Shell.quote).joined(separator: " ")
        do throws(VMSessionError) {
            return try await ExternalCommand.output(
                of: "timeout", Self.deadline(Self.commandSeconds) + ["sh", "-c", "exec \"$@\"", "vmsessiond-ssh", target.program] + target.arguments(control: control) + ["-T", "--", target.host, command])
        } catch {
            throw VMSessionError(.hypervisorError, "A command on \(target.host) failed: \(error.message)", cause: error)
        }
    }

    /// Runs the host's ssh (a name or a path: through `sh`) on the master's control socket; returns what it
    /// printed, standard error included (where `-O` answers).
    private func ssh(_ arguments: [String]) async throws(VMSessionError) -> String {
        try await ExternalCommand.output(
            of: "timeout", Self.deadline(Self.controlSeconds) + ["sh", "-c", "exec \"$@\" 2>&1", "vmsessiond-ssh", target.program] + target.arguments(control: control) + arguments)
    }

    private func ensureMaster() async throws(VMSessionError) {
        // One caller starts the master; the others wait for it rather than start a second one.
        while true {
            let mine: Bool? = master.withLock { master in
                if let pid = master.pid, kill(pid, 0) == 0 { return nil }
                if master.starting { return false }
                master.starting = true
                return true
            }
            guard let mine else { return }
            if mine { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        var pid: Int32?
        defer { master.withLock { $0 = (pid, false) } }
        // A master left by an earlier run of the daemon (ssh -f outlives it) is adopted, not doubled.
        pid = Self.pid(inCheck: (try? await ssh(["-O", "check", "--", target.host])) ?? "")
        if pid != nil { return }
        unlink(control)
        // `-f`: ssh goes to the background once authenticated; its descriptors are /dev/null and the log, so
        // nothing waits on them. It ends with the hypervisor (deinit) or the host's connection; a host that stops
        // answering ends it within about 10 s (server-alive probes), so that no command on it (a guest network's
        // start, see RemoteGuestNetwork) waits for ever.
        try await ExternalCommand.run(
            "timeout",
            Self.deadline(Self.commandSeconds) + ["sh", "-c", "log=$1; shift; exec \"$@\" </dev/null >/dev/null 2>>\"$log\"", "vmsessiond-ssh", log, target.program]
                + target.arguments(control: control)
                + ["-f", "-N", "-M", "-o", "ExitOnForwardFailure=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
                   "-o", "ServerAliveCountMax=2", "--", target.host])
        let check = try await ssh(["-O", "check", "--", target.host])
        pid = Self.pid(inCheck: check)
        if pid == nil {
            throw VMSessionError(.unavailable, "The SSH connection to \(target.host) for the VM's sockets did not start: \(check)")
        }
    }

    /// Every ssh this type runs is ended past a deadline (`timeout`): a host whose sshd accepts TCP but does not
    /// answer would otherwise hold a command (and the operation waiting for it) for ever; its connection is then
    /// lost to libvirt's keepalive, and what the command should have done is settled when the host connects again.
    /// A command on the host: its scripts bound their own waits at 10 s.
    static let commandSeconds = 30
    /// A control command (`-O check|forward|cancel`), answered by the local master.
    static let controlSeconds = 10

    static func deadline(_ seconds: Int) -> [String] { ["--kill-after=2", "\(seconds)"] }

    /// The master's pid in `ssh -O check`'s answer ("Master running (pid=N)").
    static func pid(inCheck answer: String) -> Int32? {
        guard answer.contains("Master running"), let range = answer.range(of: "pid=") else { return nil }
        return Int32(answer[range.upperBound...].prefix { $0.isNumber }).flatMap { $0 > 1 ? $0 : nil }
    }
}
