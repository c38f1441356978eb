import ArgumentParser
import Foundation

struct SessionsSnapshotsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List a session's snapshots.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The session's id or name.") var session: String

    func run() async throws {
        let client = try options.client()
        let id = try await client.sessionID(session)
        if options.json { return try Output.printJSON(try await client.json("GET", "/api/v1/sessions/\(id)/snapshots")) }
        Output.printTable(
            ["NAME", "CREATED", "STATE", "BYTES"],
            try await client.snapshots(of: id).map { [$0.name, $0.created.formatted(.iso8601), $0.state, "\($0.bytes)"] })
    }
}
