import ArgumentParser

struct OriginsApprove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve", abstract: "Let pages from ORIGIN (e.g. http://localhost:8080) use vmsessiond.")

    @OptionGroup var options: ControlOptions
    @Argument(help: "The origin, as scheme://host[:port].") var origin: String
    @Flag(help: "Also let its pages change the idle-aware controller: the idle time, and stopping or starting it.")
    var privileged = false
    @Option(help: "What its pages' guests may reach: none, internet or open (default: the daemon's guestEgress).")
    var egress: String?
    @Option(name: .customLong("host-label"), help: "Place its sessions only on hosts labelled KEY=VALUE; repeatable.")
    var hostLabels: [String] = []

    func run() async throws {
        var labels: [String: String] = [:]
        for label in hostLabels {
            guard let equals = label.firstIndex(of: "="), equals != label.startIndex else {
                throw ValidationError("--host-label takes KEY=VALUE; got '\(label)'.")
            }
            labels[String(label[..<equals])] = String(label[label.index(after: equals)...])
        }
        try await OriginsCommand.decide(
            "approve", origin: origin, privileged: privileged, egress: egress, hostLabels: labels, options: options)
    }
}
