import ArgumentParser

struct ImagesList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the images and their state.")

    @OptionGroup var options: ControlOptions

    func run() async throws {
        let reply = try await options.client().call("GET", "/api/v1/images")
        if options.json { return try ControlClient.printJSON(reply) }
        let images = (reply as? [String: Any])?["images"] as? [[String: Any]] ?? []
        ControlClient.printTable(
            ["VERSION", "STATE", "FORMAT", "SIZE", "SOURCE"],
            images.map { image in
                let size = (image["size"] as? Int).map { "\($0)" } ?? ""
                let source = image["url"] as? String ?? image["path"] as? String ?? "built in"
                return [image["version"] as? String ?? "", image["state"] as? String ?? "", image["format"] as? String ?? "", size, source]
            })
    }
}
