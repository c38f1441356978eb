import ArgumentParser

struct SessionsShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one session as JSON.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The session's id or name.") var session: String

    func run() async throws {
        let client = try options.client()
        let id = try await client.sessionID(session)
        try Output.printJSON(try await client.json("GET", "/api/v1/sessions/\(id)"))
    }
}
