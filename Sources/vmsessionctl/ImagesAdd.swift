import ArgumentParser
import VMSessionClient
import Foundation

struct ImagesAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Register a local image file as VERSION (the daemon hashes it; the file stays where it is).")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The version name sessions open it by.") var version: String
    @Argument(help: "The image file (qcow2 or raw).") var file: String
    @Option(help: "qcow2 or raw (detected when omitted).") var format: String?

    func run() async throws {
        let path = URL(fileURLWithPath: file).standardizedFileURL.path
        let client = try options.client()
        if options.json {
            var body: [String: JSONValue] = ["version": .string(version), "path": .string(path)]
            if let format { body["format"] = .string(format) }
            return try Output.printJSON(try await client.json("POST", "/api/v1/images", body: body))
        }
        let image = try await client.addImage(version: version, path: path, format: format)
        print("added \(version): \(path) sha256 \(image.sha256 ?? "?")")
    }
}
