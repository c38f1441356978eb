import ArgumentParser

/// `vmsessionctl sessions snapshots …`: a session's snapshots (memory and disk), with the admin token.
struct SessionsSnapshots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshots", abstract: "List, take, revert to or delete a session's snapshots.",
        subcommands: [SessionsSnapshotsList.self, SessionsSnapshotsCreate.self, SessionsSnapshotsRevert.self, SessionsSnapshotsDelete.self], defaultSubcommand: SessionsSnapshotsList.self)
}
