import ArgumentParser

struct SessionsSnapshotsCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Take snapshot NAME of the session's running or paused VM, and wait for it.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The session's id or name.") var session: String
    @Argument(help: "The snapshot's name (letters, digits, '.', '_', '-').") var name: String

    func run() async throws {
        let client = try options.client()
        let id = try await client.sessionID(session)
        try await client.finish(try await client.takeSnapshot(name, of: id), timeout: 300)
        print("took snapshot \(name) of \(session) (\(id))")
    }
}
