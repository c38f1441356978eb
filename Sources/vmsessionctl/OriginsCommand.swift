import ArgumentParser
import VMSessionClient

/// `vmsessionctl origins …`: which web pages may use the daemon.
struct OriginsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "origins",
        abstract: "List, approve, deny or forget the web origins that asked to use vmsessiond.",
        subcommands: [OriginsList.self, OriginsApprove.self, OriginsDeny.self, OriginsForget.self],
        defaultSubcommand: OriginsList.self)
}

extension OriginsCommand {
    /// Sends the user's decision (`approve` or `deny`) about an origin and says what the daemon recorded.
    static func decide(
        _ verb: String, origin: String, privileged: Bool = false, egress: String? = nil, hostLabels: [String: String] = [:],
        options: ControlOptions
    ) async throws {
        let client = try options.client()
        if options.json {
            var body: [String: JSONValue] = ["origin": .string(origin)]
            if privileged { body["privileged"] = true }
            if let egress { body["egress"] = .string(egress) }
            if !hostLabels.isEmpty { body["hostLabels"] = .object(hostLabels.mapValues { .string($0) }) }
            return try Output.printJSON(try await client.json("POST", "/api/v1/origins/\(verb)", body: body))
        }
        let record = try await client.decide(verb, origin: origin, privileged: privileged, egress: egress, hostLabels: hostLabels)
        let egressNote = record.egress.map { ", guests reach: \($0)" } ?? ""
        let labels = (record.hostLabels ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        let hostNote = labels.isEmpty ? "" : ", hosts labelled \(labels)"
        print("\(record.status)\(record.privileged == true ? " (privileged)" : "")\(egressNote)\(hostNote) \(record.origin)")
    }
}
