import ArgumentParser

struct SessionsShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one session as JSON.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The session id.") var id: String

    func run() async throws {
        try ControlClient.printJSON(try await options.client().call("GET", "/api/v1/sessions/\(id)"))
    }
}
