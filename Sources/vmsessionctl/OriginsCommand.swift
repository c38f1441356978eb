import ArgumentParser
import VMSessionClient

/// `vmsessionctl origins …`: which web pages may use the daemon.
struct OriginsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "origins",
        abstract: "List, approve, deny or forget the web origins that asked to use vmsessiond.",
        subcommands: [OriginsList.self, OriginsApprove.self, OriginsDeny.self, OriginsForget.self],
        defaultSubcommand: OriginsList.self)
}

extension OriginsCommand {
    /// Sends the user's decision (`approve` or `deny`) about an origin and says what the daemon recorded.
    static func decide(_ verb: String, origin: String, options: ControlOptions) async throws {
        let client = try options.client()
        if options.json { return try Output.printJSON(try await client.json("POST", "/api/v1/origins/\(verb)", body: ["origin": .string(origin)])) }
        let record = try await client.decide(verb, origin: origin)
        print("\(record.status) \(record.origin)")
    }
}
