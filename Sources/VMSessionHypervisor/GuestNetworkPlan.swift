import VMSessionCore

/// The commands that bring up one guest's network sandbox (see ``GuestNetwork``), as a value: the namespace
/// holder with its script, and pasta's arguments. Pure: a runner executes them, the local one with argument
/// vectors on this machine (``GuestNetwork``), the remote one as one shell script on a host reached over SSH
/// (``RemoteGuestNetwork``, through ``upScript``).
///
/// Why a value of its own: the sandbox is the same wherever the VM runs; only who runs the commands, and where
/// their files are, differ. One plan keeps the two runners from drifting apart (a route, a pasta option).
struct GuestNetworkPlan: Equatable, Sendable {
    /// The directory of the session's network files (pids, sockets, the helpers' log), on the machine that runs them.
    let directory: String
    let rules: GuestEgressRules
    /// Whether the helpers run as root (pasta would otherwise switch to `nobody`, who may not enter the namespace).
    let runsAsRoot: Bool
    /// Who besides the helpers' user reaches `net.sock` (only in ``upScript``: the local runner's QEMU is its user).
    var access: SocketAccess = .ownerOnly

    /// Who may connect to the session's `net.sock`, and so what the modes of its directories are.
    ///
    /// Group ownership rather than POSIX ACLs: it needs nothing on the host beyond coreutils (setfacl needs the
    /// `acl` package, and the file system ACLs), it is what libvirt's own DAC driver does for QEMU's files, and
    /// `ls -l` shows all of it. An ACL would name QEMU's user rather than its group: the same processes (every QEMU
    /// of that libvirt), so it would grant no less.
    enum SocketAccess: Equatable, Sendable {
        /// QEMU runs as the helpers' user (the local machine, a session libvirt): the directories are 0700, the
        /// socket the owner's alone.
        case ownerOnly
        /// QEMU runs as another user whose group is `gid` (a system libvirt's `libvirt-qemu`): the sessions'
        /// directory and the session's are that group's with mode 0710 (entered, never listed), `net.sock` is that
        /// group's with mode 0660; every other file (the API's socket, pids, the log) stays the owner's alone
        /// (`umask 077`).
        case group(UInt32)

        /// What ``upScript`` runs on the directories (`$base`, `$dir`) once they are the user's own.
        var directoryCommands: String {
            switch self {
            case .ownerOnly: #"chmod 700 -- "$base" "$dir""#
            case .group(let gid): #"chmod 700 -- "$base" "$dir" && chgrp -- \#(gid) "$base" "$dir" && chmod 710 -- "$base" "$dir""#
            }
        }

        /// What ``upScript`` runs on `net.sock` once passt made it (group first: the mode never opens it to the
        /// user's own group); nil when it stays as passt made it.
        var netSocketCommands: String? {
            switch self {
            case .ownerOnly: nil
            case .group(let gid): #"chgrp -- \#(gid) "$dir/net.sock" && chmod 660 -- "$dir/net.sock""#
            }
        }
    }

    /// Starts the namespace's holder, detached (`setsid --fork`): it outlives the call that starts it (and the
    /// daemon), records its pid, waits for pasta's link, sets the routes, then runs the API relay and passt.
    var namespaceCommand: [String] {
        ["setsid", "--fork", "unshare", "--user", "--map-root-user", "--net", "--", "/bin/sh", "-c", GuestNetwork.namespaceScript,
         "vmsessiond-net", directory, rules.allowsDNS ? "dns" : "nodns"] + rules.unreachable
    }

    /// pasta's arguments but the namespace it joins (``namespaceArguments(pid:)``): it links the namespace to
    /// the host's network, in the host's namespace, and forwards no port either way.
    var pastaArguments: [String] {
        var arguments = [
            "-q", "-4", "--config-net", "-a", GuestEgressRules.namespaceAddress, "-n", "\(GuestEgressRules.namespacePrefix)",
            "-g", GuestEgressRules.gateway, "--dns-forward", GuestEgressRules.resolver,
            "-t", "none", "-u", "none", "-T", "none", "-U", "none",
            "-P", directory + "/" + GuestNetwork.pastaPIDFile,
        ]
        if !rules.mapsGatewayToHost { arguments.append("--no-map-gw") }
        if runsAsRoot { arguments += ["--runas", "0"] }
        return arguments
    }

    /// The namespace of the holder whose pid is `pid` (a number, or a shell expansion in ``upScript``).
    static func namespaceArguments(pid: String) -> [String] {
        ["--userns", "/proc/\(pid)/ns/user", "--netns", "/proc/\(pid)/ns/net"]
    }

    /// pasta's whole command for the holder `pid`.
    func pastaCommand(namespacePID pid: Int32) -> [String] { ["pasta"] + pastaArguments + Self.namespaceArguments(pid: "\(pid)") }

    // MARK: As one script (a remote host)

    /// Shell functions every script on a remote host starts with (`$dir` is the session's directory): whether a
    /// pid file names a live process whose command line names the directory (a pid file that outlived its
    /// process may name a reused pid), whether the sandbox is up, and how it is taken down.
    static let functions = #"""
        set -u
        alive() {
            [ -s "$dir/$1" ] || return 1
            p=$(cat "$dir/$1") && [ "$p" -gt 1 ] 2>/dev/null && kill -0 "$p" 2>/dev/null || return 1
            tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$dir"
        }
        isup() { alive namespace.pid && alive pasta.pid && [ -S "$dir/net.sock" ] && [ -S "$dir/api.sock" ]; }
        down() {
            if alive pasta.pid; then kill -TERM "$(cat "$dir/pasta.pid")"; fi
            if alive namespace.pid; then kill -TERM -"$(cat "$dir/namespace.pid")"; fi
            rm -f "$dir/pasta.pid" "$dir/namespace.pid" "$dir/net.sock" "$dir/api.sock"
        }
        """#

    /// The whole start as one script, for a host where each step would be a round trip: unless the sandbox runs
    /// already, it starts the holder, waits for its pid, runs pasta on its namespace and waits for both sockets,
    /// within `timeout` seconds. It prints `up` when done; otherwise it takes the sandbox down and prints why
    /// (with the helpers' log) on standard error.
    func upScript(timeoutSeconds: Int) -> String {
        let steps = max(1, timeoutSeconds * 40)
        return """
            dir=\(Shell.quote(directory))
            \(Self.functions)
            if isup; then echo up; exit 0; fi
            down
            umask 077
            # The directory and its parent (all sessions' directories) are the user's own, and no one else's to enter
            # (but QEMU's group, where QEMU runs as another user: see SocketAccess).
            base=$(dirname -- "$dir")
            mkdir -p -- "$dir" && [ -O "$base" ] && [ ! -L "$base" ] && [ -O "$dir" ] && [ ! -L "$dir" ] && \(access.directoryCommands) \\
                || { echo "vmsessiond: $dir is not the user's own directory (or cannot be given QEMU's group)" >&2; exit 1; }
            failed() { echo "vmsessiond: $1: $(tail -c 600 "$dir/network.log" 2>/dev/null)" >&2; down; exit 1; }
            \(namespaceCommand.map(Shell.quote).joined(separator: " ")) </dev/null >/dev/null 2>&1 || failed "the namespace did not start"
            i=0
            until [ -s "$dir/\(GuestNetwork.namespacePIDFile)" ]; do
                i=$((i + 1)); [ "$i" -le \(steps) ] || failed "the guest's network namespace did not start (unprivileged user namespaces may be disabled)"
                sleep 0.025
            done
            ns=$(cat "$dir/\(GuestNetwork.namespacePIDFile)")
            pasta \(pastaArguments.map(Shell.quote).joined(separator: " ")) \(Self.namespaceArguments(pid: "$ns").map { "\"\($0)\"" }.joined(separator: " ")) </dev/null >/dev/null 2>>"$dir/network.log" \\
                || failed "the guest's network could not be linked to the host (pasta; it needs read and write access to /dev/net/tun)"
            until isup; do
                i=$((i + 1)); [ "$i" -le \(steps) ] || failed "the guest's network did not come up in time"
                sleep 0.025
            done
            \(access.netSocketCommands.map { "{ \($0); } || failed \"QEMU's group cannot be given the guest's network socket\"" } ?? "")
            echo up
            """
    }

    /// Takes the sandbox of the session whose directory is `directory` down (its sockets and pids go; the log stays).
    static func downScript(directory: String) -> String {
        "dir=\(Shell.quote(directory))\n\(functions)\ndown\n"
    }

    /// Takes it down and removes its directory, and `parent` too when no other session's is left in it.
    static func removeScript(directory: String, parent: String) -> String {
        "dir=\(Shell.quote(directory))\n\(functions)\ndown\nrm -rf -- \"$dir\"\nrmdir -- \(Shell.quote(parent)) 2>/dev/null\ntrue\n"
    }
}

/// Quoting for POSIX `sh`.
enum Shell {
    /// `word` as one single-quoted shell word.
    static func quote(_ word: String) -> String {
        "'" + word.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
    }
}
