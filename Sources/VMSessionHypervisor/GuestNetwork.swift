import Foundation
import VMSessionCore

/// A guest's network: the sandbox its packets leave through, and the Unix socket the daemon reaches its
/// API on. One per VM process, started before QEMU and stopped after it.
///
/// Why it exists: QEMU 7.2's user network maps the gateway to the host's loopback and opens its sockets in
/// the host's network namespace, so a guest reached every local service, the daemon and the other guests'
/// forwards. Here the guest's user-mode stack (`passt`, QEMU's `-netdev stream` peer) runs in a user and
/// network namespace of its own, whose only way out is `pasta` in the host's namespace; routes in that
/// namespace carry out the ``EgressPolicy`` (see ``GuestEgressRules``) before a packet leaves it. This
/// works the same for root and for an unprivileged desktop user (both tools come with Debian's `passt`).
///
/// The guest's port 80 is forwarded by passt to a port on the namespace's own loopback, and `socat` relays
/// a Unix socket (mode 0600, in a directory of the daemon's user) to it: no TCP port on the host's loopback
/// answers for the guest, so no other local program reaches it.
///
/// The processes are detached (a session of their own), so a VM that outlives a daemon restart keeps its
/// network; their process ids are kept in the directory, and ``down(_:)`` ends them.
///
/// The commands are a ``GuestNetworkPlan``, which this type runs on this machine; a remote host's VMs get the
/// same plan run on their host over SSH (``RemoteGuestNetwork``).
struct GuestNetwork: Sendable {
    /// The directory of a session's network files: pids, sockets, the helpers' log.
    let directory: @Sendable (SessionID) -> String
    /// The host's own IPv4 addresses, blocked under `internet` (read when a network starts).
    var hostAddresses: @Sendable () -> [String] = GuestNetwork.localIPv4Addresses
    /// How long the helpers get to come up.
    var startTimeout: Duration = .seconds(10)

    static let namespacePIDFile = "namespace.pid"
    static let pastaPIDFile = "pasta.pid"
    static let policyFile = "egress"
    static let netSocket = "net.sock"
    static let apiSocket = "api.sock"
    /// The longest socket path passt takes: Debian 12's passt cuts `--socket` at 98 bytes (not `sun_path`'s 107),
    /// so a longer one would make it listen somewhere QEMU never looks.
    static let maximumSocketPath = 96
    /// The port on the namespace's own loopback that passt forwards to the guest's port 80.
    static let namespaceAPIPort = 8080

    func netSocketPath(for id: SessionID) -> String { directory(id) + "/" + Self.netSocket }
    func apiSocketPath(for id: SessionID) -> String { directory(id) + "/" + Self.apiSocket }

    /// Records the policy the VM is defined with; ``up(_:)`` reads it at every start and restore.
    func prepare(_ id: SessionID, policy: EgressPolicy) throws(VMSessionError) {
        let dir = directory(id)
        do {
            try FileManager.default.createDirectory(
                atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try Data(policy.rawValue.utf8).write(to: URL(fileURLWithPath: dir + "/" + Self.policyFile), options: .atomic)
        } catch {
            throw VMSessionError(.ioError, "Cannot prepare the guest network's directory \(dir).", cause: error)
        }
    }

    /// The policy the VM was defined with, or nil if it has no network.
    func policy(of id: SessionID) -> EgressPolicy? {
        guard let data = FileManager.default.contents(atPath: directory(id) + "/" + Self.policyFile) else { return nil }
        return EgressPolicy(rawValue: String(decoding: data, as: UTF8.self))
    }

    /// Whether the helpers of session `id` run (both of them, and both sockets are there).
    func isUp(_ id: SessionID) -> Bool {
        let dir = directory(id)
        guard let namespace = pid(in: Self.namespacePIDFile, of: id), let pasta = pid(in: Self.pastaPIDFile, of: id) else { return false }
        return Self.isAlive(namespace, mentioning: dir) && Self.isAlive(pasta, mentioning: dir)
            && FileManager.default.fileExists(atPath: dir + "/" + Self.netSocket)
            && FileManager.default.fileExists(atPath: dir + "/" + Self.apiSocket)
    }

    /// Starts the sandbox for the VM of `id`, unless it already runs; returns when QEMU can connect.
    func up(_ id: SessionID) async throws(VMSessionError) {
        guard let policy = policy(of: id) else { return }
        if isUp(id) { return }
        down(id)
        let dir = directory(id)
        let rules = GuestEgressRules(policy: policy, hostAddresses: hostAddresses())
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw VMSessionError(.ioError, "Cannot create the guest network's directory \(dir).", cause: error)
        }
        let plan = GuestNetworkPlan(directory: dir, rules: rules, runsAsRoot: geteuid() == 0)
        // 1. The namespace, with the script that waits for its link, sets the routes and starts passt and
        //    the API relay. `setsid --fork` detaches it: it outlives this call (and the daemon).
        let holder = plan.namespaceCommand
        try await ExternalCommand.run(holder[0], Array(holder.dropFirst()))
        let clock = ContinuousClock()
        let deadline = clock.now + startTimeout
        var namespace: Int32?
        while namespace == nil {
            namespace = pid(in: Self.namespacePIDFile, of: id)
            if namespace == nil {
                guard clock.now < deadline else {
                    down(id)
                    throw VMSessionError(
                        .hypervisorError,
                        "The guest's network namespace did not start (unprivileged user namespaces may be disabled): \(log(of: id))")
                }
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        // 2. pasta links the namespace to the host's network (in the host's namespace).
        let pasta = plan.pastaCommand(namespacePID: namespace ?? 0)
        do {
            try await ExternalCommand.run(pasta[0], Array(pasta.dropFirst()))
        } catch {
            down(id)
            throw VMSessionError(
                .hypervisorError,
                "The guest's network could not be linked to the host (pasta; it needs read and write access to /dev/net/tun): \(error.message)",
                cause: error)
        }
        // 3. QEMU connects to passt's socket; the daemon to the relay's.
        while !isUp(id) {
            guard clock.now < deadline else {
                let detail = log(of: id)
                down(id)
                throw VMSessionError(.hypervisorError, "The guest's network did not come up in time: \(detail)")
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Ends the helpers of session `id` and removes their sockets and pids (the policy stays with the VM's
    /// definition). Does nothing if none run.
    func down(_ id: SessionID) {
        let dir = directory(id)
        if let pasta = pid(in: Self.pastaPIDFile, of: id), Self.isAlive(pasta, mentioning: dir) { kill(pasta, SIGTERM) }
        // The namespace's script leads a process group of its own (setsid): passt and socat are in it.
        if let namespace = pid(in: Self.namespacePIDFile, of: id), Self.isAlive(namespace, mentioning: dir) { kill(-namespace, SIGTERM) }
        for file in [Self.pastaPIDFile, Self.namespacePIDFile, Self.netSocket, Self.apiSocket] {
            try? FileManager.default.removeItem(atPath: dir + "/" + file)
        }
    }

    /// Ends the helpers and forgets the directory (the VM is gone).
    func remove(_ id: SessionID) {
        down(id)
        try? FileManager.default.removeItem(atPath: directory(id))
    }

    /// The last lines the helpers wrote, for an error message.
    func log(of id: SessionID) -> String {
        guard let data = FileManager.default.contents(atPath: directory(id) + "/network.log") else { return "no log" }
        let text = String(decoding: data.suffix(600), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? "no log" : text
    }

    private func pid(in file: String, of id: SessionID) -> Int32? {
        guard let data = FileManager.default.contents(atPath: directory(id) + "/" + file) else { return nil }
        guard let pid = Int32(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 else {
            return nil
        }
        return pid
    }

    /// Whether `pid` runs and its command line names `directory` (a pid file that outlived its process
    /// may name a pid that was reused since).
    static func isAlive(_ pid: Int32, mentioning directory: String) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM, let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else {
            return false
        }
        return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(directory)
    }

    /// The host's IPv4 addresses on every interface but the loopback.
    static func localIPv4Addresses() -> [String] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var addresses: [String] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            let text = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { inet in
                var raw = inet.pointee.sin_addr
                return inet_ntop(AF_INET, &raw, &buffer, socklen_t(INET_ADDRSTRLEN)).map { String(cString: $0) }
            }
            if let text, !text.hasPrefix("127.") { addresses.append(text) }
        }
        return addresses
    }

    /// Runs as root of the new user namespace, inside the new network namespace. Its arguments are the
    /// daemon's own (the directory, `dns` or `nodns`, then the CIDRs to make unreachable): no page's
    /// string reaches it. Protocols are numbers (17 UDP, 6 TCP): a minimal system may have no /etc/protocols. It records its pid (the namespace's holder), waits for pasta to give the namespace
    /// its link, sets the policy's routes, then starts the API relay and passt, which QEMU connects to.
    static let namespaceScript = #"""
        set -u
        dir=$1; dns=$2; shift 2
        exec >>"$dir/network.log" 2>&1 </dev/null
        echo $$ >"$dir/namespace.pid.new" && mv "$dir/namespace.pid.new" "$dir/namespace.pid"
        i=0
        until ip -4 route show default | grep -q default; do
            i=$((i + 1))
            [ "$i" -le 400 ] || { echo "vmsessiond: pasta never linked the namespace"; exit 1; }
            sleep 0.025
        done
        link=$(ip -4 route show default | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -n 1)
        # One ip process for every route and rule (ip -batch stops at the first that fails, and says which):
        # one process per range cost a start or restore some 150 ms on a busy machine.
        {
            echo "link set lo up"
            for net in "$@"; do echo "route add unreachable $net"; done
            if [ "$dns" = dns ]; then
                echo "route add 10.0.2.3/32 dev $link table 100"
                echo "rule add to 10.0.2.3 ipproto 17 dport 53 lookup 100"
                echo "rule add to 10.0.2.3 ipproto 6 dport 53 lookup 100"
            fi
        } | ip -4 -batch - || { echo "vmsessiond: cannot set the routes that block $* (and route DNS: $dns)"; exit 1; }
        # shut-none,linger=0: when the daemon ends a connection (a probe that timed out while the guest was still
        # booting), socat resets it after its 0.5 s wait instead of half-closing it. Debian 12's passt spins
        # a core on a half-closed connection whose handshake with the guest is still pending (EPOLLRDHUP
        # again and again): it did so through every boot while the API probes timed out.
        socat UNIX-LISTEN:"$dir/api.sock",fork,mode=600,unlink-early TCP4:127.0.0.1:8080,shut-none,linger=0 &
        exec passt -f -q -4 --runas 0 --no-map-gw -a 10.0.2.15 -n 24 -g 10.0.2.2 -D 10.0.2.3 --dns-forward 10.0.2.3 \
            -t 127.0.0.1/8080:80 -u none -s "$dir/net.sock"
        """#
}
