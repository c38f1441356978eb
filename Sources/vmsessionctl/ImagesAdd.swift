import ArgumentParser
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
        var body: [String: Any] = ["version": version, "path": path]
        if let format { body["format"] = format }
        let reply = try await options.client().call("POST", "/api/v1/images", body: body)
        if options.json { return try ControlClient.printJSON(reply) }
        print("added \(version): \(path) sha256 \((reply as? [String: Any])?["sha256"] as? String ?? "?")")
    }
}
