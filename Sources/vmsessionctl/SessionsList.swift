import ArgumentParser

struct SessionsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List every session.")

    @OptionGroup var options: ControlOptions

    func run() async throws {
        let reply = try await options.client().call("GET", "/api/v1/sessions")
        if options.json { return try ControlClient.printJSON(reply) }
        let sessions = (reply as? [String: Any])?["sessions"] as? [[String: Any]] ?? []
        ControlClient.printTable(
            ["ID", "NAME", "STATE", "CPUS", "MEMORY", "CAP"],
            sessions.map {
                [$0["id"] as? String ?? "", $0["name"] as? String ?? "", $0["state"] as? String ?? "",
                 ($0["cpus"] as? Int).map(String.init) ?? "-", ($0["memory"] as? Int).map { "\($0) MiB" } ?? "-",
                 "\($0["executionCap"] as? Int ?? 100)%"]
            })
    }
}
