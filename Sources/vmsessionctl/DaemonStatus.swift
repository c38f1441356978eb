import ArgumentParser

struct DaemonStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Whether the daemon answers, and what it runs on.")

    @OptionGroup var options: ControlOptions

    func run() async throws {
        let client = try options.client(admin: false)
        if options.json { return try Output.printJSON(try await client.json("GET", "/api/v1")) }
        let info = try await client.daemonInfo()
        print("vmsessiond \(info.version) at \(options.url)")
        print("hypervisor: \(info.hypervisor.driver) \(info.hypervisor.uri) (\(info.hypervisor.accelerator ?? "?"))")
    }
}
