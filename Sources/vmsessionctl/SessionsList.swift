import ArgumentParser

struct SessionsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List every session.")

    @OptionGroup var options: ControlOptions

    func run() async throws {
        let client = try options.client()
        if options.json { return try Output.printJSON(try await client.json("GET", "/api/v1/sessions")) }
        Output.printTable(
            ["ID", "NAME", "STATE", "CPUS", "MEMORY", "CAP"],
            try await client.sessions().map {
                [$0.id, $0.name, $0.state, $0.cpus.map(String.init) ?? "-", $0.memory.map { "\($0) MiB" } ?? "-", "\($0.executionCap)%"]
            })
    }
}
