import ArgumentParser

struct ImagesList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the images and their state.")

    @OptionGroup var options: ControlOptions

    func run() async throws {
        let client = try options.client()
        if options.json { return try Output.printJSON(try await client.json("GET", "/api/v1/images")) }
        Output.printTable(
            ["VERSION", "STATE", "FORMAT", "SIZE", "SOURCE"],
            try await client.images().map { image in
                [image.version, image.state, image.format ?? "", image.size.map { "\($0)" } ?? "", image.url ?? image.path ?? "built in"]
            })
    }
}
