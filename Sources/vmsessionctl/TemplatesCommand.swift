import ArgumentParser

/// `vmsessionctl templates …`: prepared VMs that sessions start warm from (admin token).
struct TemplatesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "templates",
        abstract: "Make, list or delete the templates sessions start warm from (open with version NAME).",
        subcommands: [TemplatesList.self, TemplatesCreate.self, TemplatesDelete.self],
        defaultSubcommand: TemplatesList.self)
}

struct TemplatesList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the templates and the sessions using them.")

    @OptionGroup var options: ControlOptions

    func run() async throws {
        let client = try options.client()
        if options.json { return try Output.printJSON(try await client.json("GET", "/api/v1/templates")) }
        Output.printTable(
            ["NAME", "BASE", "CPUS", "MEMORY", "BYTES", "SESSIONS", "FROM"],
            try await client.templates().map { template in
                [template.name, template.baseVersion, "\(template.cpus)", "\(template.memory) MiB", "\(template.bytes)",
                 "\(template.sessions.count)", template.fromSession]
            })
    }
}

struct TemplatesCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Make template NAME from a running session (started with user-data) and wait for it; the session runs on.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The template's name (letters, digits, '.', '_', '-'); pages open sessions with it as their version.") var name: String
    @Option(name: .customLong("from-session"), help: "The running session's id or name.") var fromSession: String

    func run() async throws {
        let client = try options.client()
        let id = try await client.sessionID(fromSession)
        try await client.finish(try await client.createTemplate(name, fromSession: id), timeout: 300)
        print("made template \(name) from \(fromSession) (\(id))")
    }
}

struct TemplatesDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete template NAME and its files (refused while sessions use it).")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The template's name.") var name: String

    func run() async throws {
        try await options.client().deleteTemplate(name)
        print("deleted template \(name)")
    }
}
