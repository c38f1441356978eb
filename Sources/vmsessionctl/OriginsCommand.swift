import ArgumentParser

/// `vmsessionctl origins …`: which web pages may use the daemon.
struct OriginsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "origins",
        abstract: "List, approve, deny or forget the web origins that asked to use vmsessiond.",
        subcommands: [OriginsList.self, OriginsApprove.self, OriginsDeny.self, OriginsForget.self],
        defaultSubcommand: OriginsList.self)
}
