import ArgumentParser

struct SessionsSnapshotsRevert: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revert", abstract: "Bring the session's VM back to snapshot NAME (running or paused as it was), and wait.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The session's id or name.") var session: String
    @Argument(help: "The snapshot's name.") var name: String

    func run() async throws {
        let client = try options.client()
        let id = try await client.sessionID(session)
        try await client.finish(try await client.revert(id, to: name), timeout: 300)
        print("reverted \(session) (\(id)) to \(name)")
    }
}
