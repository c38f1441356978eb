import ArgumentParser

struct SessionsClose: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "close", abstract: "Close a session: power off and remove its VM and disks.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The session's id or name.") var session: String

    func run() async throws {
        let client = try options.client()
        let id = try await client.sessionID(session)
        try await client.run("close", on: id)
        print("closed \(session) (\(id))")
    }
}
