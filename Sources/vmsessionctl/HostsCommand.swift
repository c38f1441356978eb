import ArgumentParser
import Foundation
import VMSessionClient

/// `vmsessionctl hosts …`: the libvirt hosts the daemon drives (admin token).
struct HostsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hosts",
        abstract: "List, add, drain, undrain or remove the libvirt hosts the daemon drives.",
        subcommands: [HostsList.self, HostsShow.self, HostsAdd.self, HostsDrain.self, HostsUndrain.self, HostsRemove.self],
        defaultSubcommand: HostsList.self)

    /// One host as a table row.
    static func row(_ host: HostInfo) -> [String] {
        let capacity = host.capacity.map { "\($0.cpus) CPUs, \($0.memory) MiB" + ($0.freeMemory.map { " (\($0) free)" } ?? "") } ?? "-"
        var state = host.state
        if host.draining { state += ", draining" }
        if let reason = host.reason { state += ": \(reason)" }
        return [
            host.name, state, "\(host.sessions)" + (host.maxSessions.map { "/\($0)" } ?? ""), capacity,
            host.latencyMs.map { String(format: "%.1f ms", $0) } ?? "-",
            host.guestNetwork.map { $0.available ? "yes" : "no" } ?? "-",
            host.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","), host.uri,
        ]
    }

    /// NETWORK: whether guests get a network there (`hosts show --json` has the reason when not).
    static let header = ["NAME", "STATE", "SESSIONS", "CAPACITY", "LATENCY", "NETWORK", "LABELS", "URI"]

    static func print(_ host: HostInfo, json: Bool, client: VMSessionClient) async throws {
        if json { return try Output.printJSON(try await client.json("GET", "/api/v1/hosts/\(host.name)")) }
        Output.printTable(header, [row(host)])
    }
}

struct HostsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the hosts: state, sessions, capacity, latency.")

    @OptionGroup var options: ControlOptions

    func run() async throws {
        let client = try options.client()
        if options.json { return try Output.printJSON(try await client.json("GET", "/api/v1/hosts")) }
        Output.printTable(HostsCommand.header, try await client.hosts().map(HostsCommand.row))
    }
}

struct HostsShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show host NAME.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The host's name.") var name: String

    func run() async throws {
        let client = try options.client()
        try await HostsCommand.print(try await client.host(name), json: options.json, client: client)
    }
}

struct HostsAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add a remote libvirt host; the daemon connects to it in the background (see 'hosts list').",
        discussion: """
            URI is qemu+ssh://[USER@]HOST[:PORT]/session|system (options such as ?keyfile=… as libvirt takes them),
            qemu+tls://HOST[:PORT]/system, qemu:///system, qemu:///session or test:///default.
            """)

    @OptionGroup var options: ControlOptions
    @Argument(help: "The host's name (lowercase letters, digits and '-').") var name: String
    @Argument(help: "The libvirt URI the daemon connects to.") var uri: String
    @Option(name: .customLong("label"), help: "A label KEY=VALUE (origins may be restricted to hosts with some); repeatable.")
    var labels: [String] = []
    @Option(name: .customLong("max-sessions"), help: "At most this many sessions on the host.") var maxSessions: Int?

    func run() async throws {
        var parsed: [String: String] = [:]
        for label in labels {
            guard let equals = label.firstIndex(of: "="), equals != label.startIndex else {
                throw ValidationError("--label takes KEY=VALUE; got '\(label)'.")
            }
            parsed[String(label[..<equals])] = String(label[label.index(after: equals)...])
        }
        let client = try options.client()
        let request = HostRequest(name: name, uri: uri, labels: parsed.isEmpty ? nil : parsed, maxSessions: maxSessions)
        let host = try await client.addHost(request)
        if options.json { return try Output.printJSON(try await client.json("GET", "/api/v1/hosts/\(host.name)")) }
        Swift.print("added host \(host.name) (\(host.state))")
    }
}

struct HostsDrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain", abstract: "Place no new sessions on host NAME (its sessions stay).")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The host's name.") var name: String

    func run() async throws {
        let host = try await options.client().drainHost(name)
        Swift.print("host \(host.name) is draining")
    }
}

struct HostsUndrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "undrain", abstract: "Place new sessions on host NAME again.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The host's name.") var name: String

    func run() async throws {
        let host = try await options.client().drainHost(name, draining: false)
        Swift.print("host \(host.name) takes new sessions")
    }
}

struct HostsRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Remove host NAME (added with 'hosts add'; refused while it holds sessions).")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The host's name.") var name: String

    func run() async throws {
        try await options.client().removeHost(name)
        Swift.print("removed host \(name)")
    }
}
