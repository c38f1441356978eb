import ArgumentParser

struct SessionsDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a closed session for good: its name is free again.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The session's id or name.") var session: String

    func run() async throws {
        let client = try options.client()
        let id = try await client.sessionID(session)
        try await client.deleteSession(id)
        print("deleted \(session) (\(id))")
    }
}
