import ArgumentParser

struct ImagesRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Forget VERSION (a downloaded file is deleted; a registered local file is kept).")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The version.") var version: String

    func run() async throws {
        try await options.client().removeImage(version)
        print("removed \(version)")
    }
}
