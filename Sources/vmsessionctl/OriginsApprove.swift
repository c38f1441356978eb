import ArgumentParser

struct OriginsApprove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve", abstract: "Let pages from ORIGIN (e.g. http://localhost:8080) use vmsessiond.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The origin, as scheme://host[:port].") var origin: String

    func run() async throws {
        let reply = try await options.client().call("POST", "/api/v1/origins/approve", body: ["origin": origin])
        if options.json { return try ControlClient.printJSON(reply) }
        print("approved \((reply as? [String: Any])?["origin"] as? String ?? origin)")
    }
}
