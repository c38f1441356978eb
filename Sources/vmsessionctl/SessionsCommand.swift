import ArgumentParser

/// `vmsessionctl sessions …`: every session on the daemon, with the admin token.
struct SessionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sessions", abstract: "List, show or close sessions.",
        subcommands: [SessionsList.self, SessionsShow.self, SessionsClose.self], defaultSubcommand: SessionsList.self)
}
