import ArgumentParser
import Foundation

struct ImagesPull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull", abstract: "Register VERSION to be downloaded from URL, and download it now, showing progress.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The version name sessions open it by.") var version: String
    @Argument(help: "An http:// or https:// URL.") var url: String
    @Option(help: "The image's SHA-256 in hex; the download is refused if it differs.") var sha256: String
    @Option(help: "qcow2 (default) or raw.") var format: String?
    @Flag(help: "Return once the download has started.") var noWait = false

    func run() async throws {
        let client = try options.client()
        _ = try await client.pullImage(version: version, url: url, sha256: sha256, format: format)
        if noWait {
            if options.json { return try Output.printJSON(try await client.json("GET", "/api/v1/images/\(version)")) }
            return print("pulling \(version) in the background; `vmsessionctl images` shows how far")
        }
        var lastLine = ""
        while true {
            let image = try await client.image(version)
            if image.state == "available" { return print("pulled \(version)") }
            if image.state == "remote", let error = image.lastError { throw ValidationError("pull failed: \(error)") }
            if let download = image.download {
                let bytes = Double(download.bytes) / 1_048_576
                let total = download.totalBytes.map { String(format: " of %.1f", Double($0) / 1_048_576) } ?? ""
                let line = String(format: "%.1f", bytes) + "\(total) MiB"
                if line != lastLine, !options.json { print(line) }
                lastLine = line
            }
            try await Task.sleep(for: .milliseconds(500))
        }
    }
}
