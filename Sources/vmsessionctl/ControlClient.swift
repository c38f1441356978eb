import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A small JSON client for the daemon's REST API. A daemon error is shown as the daemon said it.
struct ControlClient {
    let base: String
    let token: String?

    func call(_ method: String, _ path: String, body: [String: Any]? = nil) async throws -> Any {
        guard let url = URL(string: base + path) else { throw ValidationError("'\(base)' is not a URL.") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw ControlError("Cannot reach vmsessiond at \(base): \(error.localizedDescription)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let json = data.isEmpty ? [String: Any]() : try JSONSerialization.jsonObject(with: data)
        guard (200..<300).contains(status) else {
            let error = (json as? [String: Any])?["error"] as? [String: Any]
            throw ControlError("\(error?["message"] as? String ?? "HTTP \(status)") [\(error?["code"] as? String ?? "error")]")
        }
        return json
    }

    /// Prints JSON as the daemon sent it (pretty; URLs and paths as written, without `\/`).
    static func printJSON(_ value: Any) throws {
        let data = try JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        print(String(decoding: data, as: UTF8.self))
    }

    /// Prints rows as aligned columns.
    static func printTable(_ header: [String], _ rows: [[String]]) {
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            print(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
    }
}

/// A failure to show the user as is, with a non-zero exit.
struct ControlError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension ControlClient {
    /// The id of the session `reference` names: the reference itself if it is a session id, else the id of the
    /// session with that name (names are unique).
    func sessionID(_ reference: String) async throws -> String {
        if UUID(uuidString: reference) != nil { return reference.lowercased() }
        let reply = try await call("GET", "/api/v1/sessions") as? [String: Any]
        let sessions = reply?["sessions"] as? [[String: Any]] ?? []
        guard let match = sessions.first(where: { $0["name"] as? String == reference }), let id = match["id"] as? String else {
            throw ControlError("There is no session with the id or name '\(reference)'; see 'vmsessionctl sessions list'.")
        }
        return id
    }
}
