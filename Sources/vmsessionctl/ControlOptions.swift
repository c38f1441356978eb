import ArgumentParser
import Foundation
import VMSessionClient

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

    func client(admin: Bool = true) throws -> VMSessionClient {
        VMSessionClient(baseURL: url, token: admin ? try adminToken() : nil)
    }
}

extension ControlOptions {
    /// The shared options that take a value, and the shared flags.
    static let valueOptions: Set<String> = ["--url", "--state-dir", "--token"]
    static let flags: Set<String> = ["--json"]

    /// Moves shared options given before the subcommand (`--state-dir X origins list`) to the end
    /// (`origins list --state-dir X`), where the subcommand's `@OptionGroup` reads them. Everything else keeps
    /// its order; `--help` and unknown words stay where they are.
    static func movingSharedOptionsLast(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var index = 0
        while index < arguments.count {
            let word = arguments[index]
            let name = String(word.split(separator: "=", maxSplits: 1).first ?? "")
            if valueOptions.contains(name) {
                leading.append(word)
                if !word.contains("="), index + 1 < arguments.count {
                    leading.append(arguments[index + 1])
                    index += 1
                }
            } else if flags.contains(word) {
                leading.append(word)
            } else {
                break
            }
            index += 1
        }
        return Array(arguments[index...]) + leading
    }
}
