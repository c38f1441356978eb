import ArgumentParser

/// `vmsessionctl sessions …`: every session on the daemon, with the admin token.
struct SessionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sessions", abstract: "List, show, close or delete sessions; their snapshots.",
        subcommands: [SessionsList.self, SessionsShow.self, SessionsClose.self, SessionsDelete.self, SessionsSnapshots.self], defaultSubcommand: SessionsList.self)
}
