import ArgumentParser

struct SessionsClose: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "close", abstract: "Close a session: power off and remove its VM and disks.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The session's id or name.") var session: String

    func run() async throws {
        let client = try options.client()
        let id = try await client.sessionID(session)
        let reply = try await client.call("POST", "/api/v1/sessions/\(id)/close") as? [String: Any]
        guard let operation = (reply?["operation"] as? [String: Any])?["id"] as? String else {
            throw ControlError("The daemon did not return an operation.")
        }
        let done = try await client.call("GET", "/api/v1/operations/\(operation)/wait?timeout=120") as? [String: Any]
        let status = done?["status"] as? String ?? "unknown"
        guard status == "succeeded" else {
            let message = (done?["error"] as? [String: Any])?["message"] as? String ?? status
            throw ControlError("close \(status): \(message)")
        }
        print("closed \(session) (\(id))")
    }
}
