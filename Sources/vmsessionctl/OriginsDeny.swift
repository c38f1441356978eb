import ArgumentParser

struct OriginsDeny: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "deny", abstract: "Refuse pages from ORIGIN, now and later.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The origin, as scheme://host[:port].") var origin: String

    func run() async throws {
        try await OriginsCommand.decide("deny", origin: origin, options: options)
    }
}
