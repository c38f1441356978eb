import ArgumentParser

struct OriginsForget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget", abstract: "Forget ORIGIN: its next request is refused and it is pending again.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The origin, as scheme://host[:port].") var origin: String

    func run() async throws {
        try await options.client().forget(origin: origin)
        print("forgot \(origin)")
    }
}
