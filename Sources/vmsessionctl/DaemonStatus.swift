import ArgumentParser

struct DaemonStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Whether the daemon answers, and what it runs on.")

    @OptionGroup var options: ControlOptions

    func run() async throws {
        let reply = try await options.client(admin: false).call("GET", "/api/v1")
        if options.json { return try ControlClient.printJSON(reply) }
        let info = reply as? [String: Any] ?? [:]
        let hypervisor = info["hypervisor"] as? [String: Any] ?? [:]
        print("vmsessiond \(info["version"] as? String ?? "?") at \(options.url)")
        print("hypervisor: \(hypervisor["driver"] as? String ?? "?") \(hypervisor["uri"] as? String ?? "") (\(hypervisor["accelerator"] as? String ?? "?"))")
    }
}
