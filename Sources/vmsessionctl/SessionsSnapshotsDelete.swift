import ArgumentParser

struct SessionsSnapshotsDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete snapshot NAME of the session.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The session's id or name.") var session: String
    @Argument(help: "The snapshot's name.") var name: String

    func run() async throws {
        let client = try options.client()
        let id = try await client.sessionID(session)
        try await client.deleteSnapshot(name, of: id)
        print("deleted snapshot \(name) of \(session) (\(id))")
    }
}
