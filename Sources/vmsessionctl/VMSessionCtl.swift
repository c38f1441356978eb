import ArgumentParser

/// `vmsessionctl`: the command line for the user and the admin of a local vmsessiond: approve the web
/// pages that may use it, look at and close sessions, and check on the daemon.
@main
struct VMSessionCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmsessionctl",
        abstract: "Controls a local vmsessiond: web origins, sessions, images, templates, hosts and daemon status.",
        discussion: """
            Admin commands read the daemon's admin token from <state-dir>/admin-token (the same state directory
            the daemon uses), or take it from --token / $VMSESSIOND_ADMIN_TOKEN.
            """,
        subcommands: [
            OriginsCommand.self, SessionsCommand.self, ImagesCommand.self, TemplatesCommand.self, HostsCommand.self, DaemonStatus.self,
        ])

    /// Runs the command line with the options every subcommand shares (``ControlOptions``) accepted before the
    /// subcommand too (`vmsessionctl --state-dir X origins list`): ArgumentParser only takes a subcommand's
    /// options after its name, so they are moved there first.
    static func main() async {
        let arguments = ControlOptions.movingSharedOptionsLast(Array(CommandLine.arguments.dropFirst()))
        do {
            var command = try parseAsRoot(arguments)
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
