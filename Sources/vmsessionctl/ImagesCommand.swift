import ArgumentParser

/// `vmsessionctl images …`: the disk images sessions can be opened with.
struct ImagesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images",
        abstract: "List, add, pull or remove the images that sessions open by version.",
        subcommands: [ImagesList.self, ImagesAdd.self, ImagesPull.self, ImagesRemove.self],
        defaultSubcommand: ImagesList.self)
}
