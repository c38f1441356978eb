import Foundation
import Hummingbird
import VMSessionClient
import VMSessionCore
import VMSessionDaemon

/// The libvirt hosts over HTTP, for the admin token (issue 22): list and show them with their state, capacity,
/// sessions and latency; add a remote host; drain or undrain one; remove one. A thin harness over the
/// ``HostRegistry``: every body is checked whole before the registry is asked, so a refusal changes nothing.
struct HostsController {
    let registry: HostRegistry

    func addRoutes(to router: Router<APIRequestContext>) {
        let hosts = router.group("/api/v1/hosts", context: AdminRequestContext.self)
        hosts.get(use: list)
        hosts.post(use: add)
        hosts.get(":host", use: show)
        hosts.delete(":host", use: remove)
        hosts.post(":host/drain") { request, context in try await drain(true, context) }
        hosts.post(":host/undrain") { request, context in try await drain(false, context) }
    }

    @Sendable func list(_ request: Request, context: AdminRequestContext) async throws -> Response {
        JSONResponse.make(HostList(hosts: registry.all().map(Self.view)))
    }

    @Sendable func show(_ request: Request, context: AdminRequestContext) async throws -> Response {
        JSONResponse.make(Self.view(try registry.host(named: try Self.name(context))))
    }

    @Sendable func add(_ request: Request, context: AdminRequestContext) async throws -> Response {
        var request = request
        let body = try await RequestBody.decode(HostRequest.self, from: &request, allowed: HostRequest.fields)
        let definition = try HostDefinition.validated(
            name: body.name, uri: body.uri, labels: body.labels ?? [:], maxSessions: body.maxSessions, source: .admin)
        let added = try await registry.add(definition)
        var headers = HTTPFields()
        headers[.location] = "/api/v1/hosts/\(definition.name)"
        return JSONResponse.make(Self.view(added), status: .created, headers: headers)
    }

    func drain(_ draining: Bool, _ context: AdminRequestContext) async throws -> Response {
        JSONResponse.make(Self.view(try await registry.setDraining(try Self.name(context), draining)))
    }

    @Sendable func remove(_ request: Request, context: AdminRequestContext) async throws -> Response {
        try await registry.remove(try Self.name(context))
        return Response(status: .noContent)
    }

    /// The `{host}` path segment, checked as a name (an unknown but valid name is `not_found` later).
    static func name(_ context: AdminRequestContext) throws(VMSessionError) -> String {
        let name = context.parameters.get("host") ?? ""
        try HostDefinition.validate(name: name)
        return name
    }

    static func view(_ status: HostStatus) -> HostInfo {
        let definition = status.definition
        var since: Date?
        var reason: String?
        switch status.link {
        case .connecting(let at): since = at
        case .connected(let at): since = at
        case .unreachable(let at, let why):
            since = at
            reason = why
        }
        // Milliseconds, to the microsecond.
        let latency = status.latency.map { ($0.inSeconds * 1_000_000).rounded() / 1000 }
        return HostInfo(
            name: definition.name, uri: definition.uri, labels: definition.labels, maxSessions: definition.maxSessions,
            draining: definition.draining, source: definition.source.rawValue, state: stateName(status.link), since: since,
            reason: reason, capacity: status.capacity.map { .init(cpus: $0.cpus, memory: $0.memory, freeMemory: $0.freeMemory) },
            sessions: status.sessions, latencyMs: latency,
            guestNetwork: status.guestNetwork.map { .init(available: $0.available, reason: $0.reason) })
    }

    /// The `host` of a session's view: the host's name and link for everyone, its URI for the admin.
    static func sessionHost(_ name: String, registry: HostRegistry?, admin: Bool) -> SessionHost {
        guard let status = try? registry?.host(named: name) else { return SessionHost(name: name) }
        var host = SessionHost(name: name, state: stateName(status.link), uri: admin ? status.definition.uri : nil)
        if case .unreachable(let since, let reason) = status.link {
            host.since = since
            host.reason = reason
        }
        return host
    }

    static func stateName(_ link: HostLink.State) -> String {
        switch link {
        case .connecting: "connecting"
        case .connected: "connected"
        case .unreachable: "unreachable"
        }
    }
}
