import ArgumentParser

struct ImagesRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Forget VERSION (a downloaded file is deleted; a registered local file is kept).")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The version.") var version: String

    func run() async throws {
        _ = try await options.client().call("DELETE", "/api/v1/images/\(version)")
        print("removed \(version)")
    }
}
