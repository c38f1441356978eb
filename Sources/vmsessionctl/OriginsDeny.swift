import ArgumentParser

struct OriginsDeny: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "deny", abstract: "Refuse pages from ORIGIN, now and later.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The origin, as scheme://host[:port].") var origin: String

    func run() async throws {
        let reply = try await options.client().call("POST", "/api/v1/origins/deny", body: ["origin": origin])
        if options.json { return try ControlClient.printJSON(reply) }
        print("denied \((reply as? [String: Any])?["origin"] as? String ?? origin)")
    }
}
