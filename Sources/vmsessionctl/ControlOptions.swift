import ArgumentParser
import Foundation

/// Where the daemon is and how to prove admin rights to it; shared by every subcommand.
struct ControlOptions: ParsableArguments {
    @Option(help: "The daemon's URL.")
    var url: String = ProcessInfo.processInfo.environment["VMSESSIOND_URL"] ?? "http://127.0.0.1:7011"

    @Option(name: .customLong("state-dir"), help: "The daemon's state directory (for its admin token).")
    var stateDir: String?

    @Option(help: "The admin token (default: read from the state directory).")
    var token: String?

    @Flag(help: "Print the daemon's JSON answer instead of a table.")
    var json = false

    /// The admin token: --token, $VMSESSIOND_ADMIN_TOKEN, or the file in the state directory.
    func adminToken() throws -> String {
        if let token { return token }
        let environment = ProcessInfo.processInfo.environment
        if let token = environment["VMSESSIOND_ADMIN_TOKEN"], !token.isEmpty { return token }
        let directory = stateDir ?? environment["VMSESSIOND_STATE_DIR"] ?? Self.defaultStateDirectory(environment)
        let path = directory + "/admin-token"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("Cannot read the admin token at \(path); pass --state-dir or --token (it needs the daemon's user).")
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The daemon's own default (see `vmsessiond --help`).
    static func defaultStateDirectory(_ environment: [String: String]) -> String {
        if geteuid() == 0 { return "/var/lib/vmsessiond" }
        if let xdg = environment["XDG_STATE_HOME"], !xdg.isEmpty { return xdg + "/vmsessiond" }
        return NSHomeDirectory() + "/.local/state/vmsessiond"
    }

    func client(admin: Bool = true) throws -> ControlClient {
        ControlClient(base: url, token: admin ? try adminToken() : nil)
    }
}
