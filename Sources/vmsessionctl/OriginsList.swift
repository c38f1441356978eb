import ArgumentParser

struct OriginsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the origins and their status.")

    @OptionGroup var options: ControlOptions

    func run() async throws {
        let client = try options.client()
        // The table needs fields that only this listing shows (requests, lastSeen): read from the JSON itself.
        let reply = try await client.json("GET", "/api/v1/origins")
        if options.json { return try Output.printJSON(reply) }
        let origins = (reply as? [String: Any])?["origins"] as? [[String: Any]] ?? []
        Output.printTable(
            ["ORIGIN", "STATUS", "REFUSED", "LAST SEEN"],
            origins.map { [$0["origin"] as? String ?? "", $0["status"] as? String ?? "", "\($0["requests"] as? Int ?? 0)", $0["lastSeen"] as? String ?? ""] })
    }
}
