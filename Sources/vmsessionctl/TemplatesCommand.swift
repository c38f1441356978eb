import Foundation
import ArgumentParser
import VMSessionClient

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
            ["NAME", "BASE", "CPUS", "MEMORY", "BYTES", "SESSIONS", "FROM", "HOST"],
            try await client.templates().map { template in
                [template.name, template.baseVersion, "\(template.cpus)", "\(template.memory) MiB", "\(template.bytes)",
                 "\(template.sessions.count)", template.fromSession, template.host ?? "local"]
            })
    }
}

struct TemplatesCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Make template NAME from a running session, or from an image and a warm-up user-data, and wait for it.",
        discussion: """
            --from-session SESSION: the running session (started with user-data) is saved, memory and disk, and runs on.
            --from-image VERSION --user-data FILE: the daemon boots an internal session 'template:NAME' from the image \
            with FILE as its user-data, waits until the guest prints the line VMSESSION-TEMPLATE-READY on its serial \
            console (e.g. the script's last line: echo VMSESSION-TEMPLATE-READY > /dev/ttyS0), makes the template and \
            closes the session; on a failure or timeout nothing is left.
            """)

    @OptionGroup var options: ControlOptions
    @Argument(help: "The template's name (letters, digits, '.', '_', '-'); pages open sessions with it as their version.") var name: String
    @Option(name: .customLong("from-session"), help: "The running session's id or name.") var fromSession: String?
    @Option(name: .customLong("from-image"), help: "The image (version) the warm-up boots.") var fromImage: String?
    @Option(name: .customLong("user-data"), help: "With --from-image: the warm-up user-data's file ('-' for standard input).") var userData: String?
    @Option(name: .customLong("param"), help: "With --from-image: NAME=VALUE filling ${NAME} in the user-data (repeatable).") var parameters: [String] = []
    @Option(help: "With --from-image: vCPUs (default 1).") var cpus: Int?
    @Option(help: "With --from-image: memory in MiB (default 256; sessions from the template get it).") var memory: Int?
    @Option(help: "With --from-image: disk in MiB (default 1024).") var disk: Int?
    @Option(name: .customLong("ready-timeout"), help: "With --from-image: seconds the guest has to say it is ready (default 600).") var readyTimeout: Int?

    func validate() throws {
        guard (fromSession == nil) != (fromImage == nil) else {
            throw ValidationError("Give --from-session SESSION or --from-image VERSION --user-data FILE.")
        }
        if fromImage != nil, userData == nil { throw ValidationError("--from-image needs --user-data FILE (the warm-up).") }
        if fromSession != nil, userData != nil || !parameters.isEmpty || cpus != nil || memory != nil || disk != nil || readyTimeout != nil {
            throw ValidationError("--user-data, --param, --cpus, --memory, --disk and --ready-timeout go with --from-image.")
        }
        for parameter in parameters where !parameter.contains("=") { throw ValidationError("--param wants NAME=VALUE; got '\(parameter)'.") }
    }

    func run() async throws {
        let client = try options.client()
        if let fromSession {
            let id = try await client.sessionID(fromSession)
            try await client.finish(try await client.createTemplate(name, fromSession: id), timeout: 300)
            print("made template \(name) from \(fromSession) (\(id))")
            return
        }
        guard let fromImage, let userData else { return }
        let text: String
        if userData == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            guard let data = FileManager.default.contents(atPath: userData) else { throw ValidationError("Cannot read --user-data '\(userData)'.") }
            text = String(decoding: data, as: UTF8.self)
        }
        let values = Dictionary(parameters.map { entry in
            let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (String(parts[0]), String(parts[1]))
        }, uniquingKeysWith: { _, last in last })
        var status = try await client.createTemplate(
            name, fromImage: fromImage, userData: text, parameters: values, cpus: cpus, memory: memory, disk: disk, readyTimeout: readyTimeout)
        var shown = ""
        while true {
            if status.progress.message != shown {
                shown = status.progress.message
                print("[\(status.progress.done)/\(status.progress.total)] \(shown)")
            }
            if status.status != "running" { break }
            try await Task.sleep(for: .seconds(1))
            status = try await client.warmUp(of: name)
        }
        guard status.status == "succeeded" else {
            FileHandle.standardError.write(Data("vmsessionctl: warm-up \(status.status): \(status.error?.message ?? status.status) [\(status.error?.code ?? status.status)]\n".utf8))
            throw ExitCode.failure
        }
        print("made template \(name) from image \(fromImage)")
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
