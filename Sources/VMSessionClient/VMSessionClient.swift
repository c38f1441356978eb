import Foundation

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A typed client for vmsessiond's REST API, shared by `vmsessionctl` and the tests.
///
/// It exists so that the command line and the tests speak to the daemon through one piece of code that
/// knows the routes, the token header and the error shape: a change of the API shows up in one place, and
/// the tests exercise what users run. It needs nothing but Foundation, so the CLI stays small. Every
/// method throws ``VMSessionClientError`` with the daemon's own code and message when the daemon refuses.
public struct VMSessionClient: Sendable {
    /// The daemon's base URL, e.g. `http://127.0.0.1:7011`.
    public let baseURL: String
    /// A session's or the admin token, sent as `Authorization: Bearer`.
    public var token: String?

    public init(baseURL: String, token: String? = nil) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
    }

    /// The same client with another token.
    public func with(token: String?) -> VMSessionClient { VMSessionClient(baseURL: baseURL, token: token) }

    // MARK: Daemon

    /// `GET /api/v1`: what the daemon runs on.
    public func daemonInfo() async throws -> DaemonInfo { try await get("/api/v1") }

    /// `GET /api/v1/daemon`: the idle-aware controller's state.
    public func controllerStatus() async throws -> ControllerStatus { try await get("/api/v1/daemon") }

    // MARK: Sessions

    /// `POST /api/v1/sessions`: the session called `name`, created if it is new; the secret proves ownership.
    public func requestSession(name: String, secret: String) async throws -> SessionGrant {
        try await send("POST", "/api/v1/sessions", body: ["name": .string(name), "secret": .string(secret)])
    }

    /// Every session (admin token).
    public func sessions() async throws -> [SessionInfo] {
        let list: SessionList = try await get("/api/v1/sessions")
        return list.sessions
    }

    public func session(_ id: String) async throws -> SessionInfo { try await get("/api/v1/sessions/\(id)") }

    /// The id of the session `reference` names: the reference itself if it is an id, else the id of the
    /// session with that name (names are unique; needs the admin token).
    public func sessionID(_ reference: String) async throws -> String {
        if UUID(uuidString: reference) != nil { return reference.lowercased() }
        guard let match = try await sessions().first(where: { $0.name == reference }) else {
            throw VMSessionClientError(
                status: 404, code: "not_found",
                message: "There is no session with the id or name '\(reference)'; see 'vmsessionctl sessions list'.")
        }
        return match.id
    }

    /// Asks for `action` (open, start, pause, resume, stop, hibernate, reset, close); long actions answer
    /// at once with their operation, to wait for with ``wait(for:timeout:)``.
    public func perform(_ action: String, on id: String, body: [String: JSONValue] = [:]) async throws -> ActionReceipt {
        try await send("POST", "/api/v1/sessions/\(id)/\(action)", body: body)
    }

    /// ``perform(_:on:body:)`` and then waits for the operation's end; throws if it did not succeed.
    @discardableResult
    public func run(_ action: String, on id: String, body: [String: JSONValue] = [:], timeout: Int = 120) async throws -> OperationInfo {
        try await finish(try await perform(action, on: id, body: body), timeout: timeout)
    }

    /// Waits for the operation an action started; throws if it did not succeed.
    @discardableResult
    public func finish(_ receipt: ActionReceipt, timeout: Int = 120) async throws -> OperationInfo {
        let action = receipt.operation.action
        let done = try await wait(for: receipt.operation.id, timeout: timeout)
        guard done.status == "succeeded" else {
            throw VMSessionClientError(
                status: 0, code: done.error?.code ?? done.status, message: "\(action) \(done.status): \(done.error?.message ?? done.status)")
        }
        return done
    }

    /// Waits up to `timeout` seconds (at most 300) for an operation to end; returns it as it is then.
    public func wait(for operation: String, timeout: Int = 120) async throws -> OperationInfo {
        try await get("/api/v1/operations/\(operation)/wait?timeout=\(timeout)")
    }

    public func setExecutionCap(_ percent: Int, on id: String) async throws -> SessionInfo {
        try await send("PUT", "/api/v1/sessions/\(id)/execution-cap", body: ["cap": .number(Double(percent))])
    }

    public func setProperty(_ name: String, to value: String, on id: String) async throws {
        let _: Property = try await send("PUT", "/api/v1/sessions/\(id)/properties/\(Self.escaped(name))", body: ["value": .string(value)])
    }

    public func property(_ name: String, of id: String) async throws -> String {
        let property: Property = try await get("/api/v1/sessions/\(id)/properties/\(Self.escaped(name))")
        return property.value
    }

    // MARK: Snapshots

    /// The session's snapshots, oldest first.
    public func snapshots(of id: String) async throws -> [SnapshotInfo] {
        let list: SnapshotList = try await get("/api/v1/sessions/\(id)/snapshots")
        return list.snapshots
    }

    /// Starts taking snapshot `name` of the running or paused VM (memory and disk); wait with ``finish(_:timeout:)``.
    public func takeSnapshot(_ name: String, of id: String) async throws -> ActionReceipt {
        try await send("POST", "/api/v1/sessions/\(id)/snapshots", body: ["name": .string(name)])
    }

    /// Starts bringing the VM back to snapshot `name`, running or paused as it was then.
    public func revert(_ id: String, to name: String) async throws -> ActionReceipt {
        try await send("POST", "/api/v1/sessions/\(id)/snapshots/\(Self.escaped(name))/revert", body: [:])
    }

    public func deleteSnapshot(_ name: String, of id: String) async throws {
        try await sendEmpty("DELETE", "/api/v1/sessions/\(id)/snapshots/\(Self.escaped(name))")
    }

    // MARK: Templates (admin)

    /// The ready templates, by name.
    public func templates() async throws -> [TemplateInfo] {
        let list: TemplateList = try await get("/api/v1/templates")
        return list.templates
    }

    /// Starts making template `name` from running session `id` (which runs on); wait with ``finish(_:timeout:)``.
    public func createTemplate(_ name: String, fromSession id: String) async throws -> ActionReceipt {
        try await send("POST", "/api/v1/templates", body: ["name": .string(name), "fromSession": .string(id)])
    }

    /// Starts making template `name` from image `version`: an internal session boots it with the warm-up
    /// `userData`, which prints `VMSESSION-TEMPLATE-READY` on the console when ready; follow it with ``warmUp(of:)``.
    public func createTemplate(
        _ name: String, fromImage version: String, userData: String, parameters: [String: String] = [:], cpus: Int? = nil,
        memory: Int? = nil, disk: Int? = nil, readyTimeout: Int? = nil
    ) async throws -> WarmUpInfo {
        var body: [String: JSONValue] = ["name": .string(name), "fromImage": .string(version), "userData": .string(userData)]
        if !parameters.isEmpty { body["parameters"] = .object(parameters.mapValues { .string($0) }) }
        if let cpus { body["cpus"] = .number(Double(cpus)) }
        if let memory { body["memory"] = .number(Double(memory)) }
        if let disk { body["disk"] = .number(Double(disk)) }
        if let readyTimeout { body["readyTimeout"] = .number(Double(readyTimeout)) }
        return try await send("POST", "/api/v1/templates", body: body)
    }

    /// Template `name`'s last warm-up from an image, running or ended.
    public func warmUp(of name: String) async throws -> WarmUpInfo { try await get("/api/v1/templates/\(Self.escaped(name))/warm-up") }

    /// Deletes template `name`; refused while sessions use it.
    public func deleteTemplate(_ name: String) async throws { try await sendEmpty("DELETE", "/api/v1/templates/\(Self.escaped(name))") }

    /// Deletes a closed session for good.
    public func deleteSession(_ id: String) async throws { try await sendEmpty("DELETE", "/api/v1/sessions/\(id)") }

    /// Revokes the token in use (or, with the admin token, every token of the session).
    public func revokeToken(of id: String) async throws { try await sendEmpty("DELETE", "/api/v1/sessions/\(id)/token") }

    // MARK: Origins (admin)

    public func origins() async throws -> [OriginInfo] {
        let list: OriginList = try await get("/api/v1/origins")
        return list.origins
    }

    /// `decision` is `approve` or `deny`; `privileged` (approve only) also lets the origin's pages change the
    /// idle-aware controller.
    public func decide(
        _ decision: String, origin: String, privileged: Bool = false, egress: String? = nil, hostLabels: [String: String] = [:]
    ) async throws -> OriginInfo {
        var body: [String: JSONValue] = ["origin": .string(origin)]
        if privileged { body["privileged"] = true }
        if let egress { body["egress"] = .string(egress) }
        if !hostLabels.isEmpty { body["hostLabels"] = .object(hostLabels.mapValues { .string($0) }) }
        return try await send("POST", "/api/v1/origins/\(decision)", body: body)
    }

    public func forget(origin: String) async throws { try await sendEmpty("POST", "/api/v1/origins/forget", body: ["origin": .string(origin)]) }

    // MARK: Images (admin)

    public func images() async throws -> [ImageInfo] {
        let list: ImageList = try await get("/api/v1/images")
        return list.images
    }

    public func image(_ version: String) async throws -> ImageInfo { try await get("/api/v1/images/\(Self.escaped(version))") }

    public func addImage(version: String, path: String, format: String?) async throws -> ImageInfo {
        var body: [String: JSONValue] = ["version": .string(version), "path": .string(path)]
        if let format { body["format"] = .string(format) }
        return try await send("POST", "/api/v1/images", body: body)
    }

    public func pullImage(version: String, url: String, sha256: String, format: String?) async throws -> ImageInfo {
        var body: [String: JSONValue] = ["version": .string(version), "url": .string(url), "sha256": .string(sha256)]
        if let format { body["format"] = .string(format) }
        return try await send("POST", "/api/v1/images/pull", body: body)
    }

    public func removeImage(_ version: String) async throws { try await sendEmpty("DELETE", "/api/v1/images/\(Self.escaped(version))") }

    // MARK: Transport

    /// The daemon's answer as JSON, untyped: for printing it as it came (`vmsessionctl --json`).
    public func json(_ method: String, _ path: String, body: [String: JSONValue]? = nil) async throws -> Any {
        let data = try await exchange(method, path, body: body)
        return data.isEmpty ? [String: Any]() : try JSONSerialization.jsonObject(with: data)
    }

    func get<T: Decodable>(_ path: String) async throws -> T { try await send("GET", path, body: nil) }

    func send<T: Decodable>(_ method: String, _ path: String, body: [String: JSONValue]?) async throws -> T {
        let data = try await exchange(method, path, body: body)
        do { return try Self.decoder.decode(T.self, from: data) } catch {
            throw VMSessionClientError(
                status: 0, code: "bad_response", message: "The daemon's answer to \(method) \(path) is not what this client expects: \(error)")
        }
    }

    func sendEmpty(_ method: String, _ path: String, body: [String: JSONValue]? = nil) async throws {
        _ = try await exchange(method, path, body: body)
    }

    func exchange(_ method: String, _ path: String, body: [String: JSONValue]?) async throws -> Data {
        guard let url = URL(string: baseURL + path) else {
            throw VMSessionClientError(status: 0, code: "invalid_argument", message: "'\(baseURL + path)' is not a URL.")
        }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = 330  // longer than the longest wait the daemon grants (300 s)
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = try JSONEncoder().encode(body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw VMSessionClientError(
                status: 0, code: "unreachable", message: "Cannot reach vmsessiond at \(baseURL): \(error.localizedDescription)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            let error = try? Self.decoder.decode(ErrorReply.self, from: data).error
            throw VMSessionClientError(status: status, code: error?.code ?? "http_\(status)", message: error?.message ?? "HTTP \(status)")
        }
        return data
    }

    static func escaped(_ segment: String) -> String {
        segment.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? segment
    }

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            if let date = formatter.date(from: text) { return date }
            formatter.formatOptions = [.withInternetDateTime]
            if let date = formatter.date(from: text) { return date }
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an ISO 8601 date: \(text)"))
        }
        return decoder
    }()
}

/// The daemon refused, or could not be reached: its error code (`not_found`, `invalid_state`, …), its
/// message, and the HTTP status (0 when there was no answer).
public struct VMSessionClientError: Error, CustomStringConvertible, Sendable {
    public let status: Int
    public let code: String
    public let message: String

    public var description: String { "\(message) [\(code)]" }
}
