import Hummingbird
import NIOCore
import VMSessionCore
import VMSessionDaemon
import VMSessionMetrics

/// `GET /metrics`: the daemon's series in Prometheus's text format (0.0.4).
///
/// On the daemon's listener it needs the admin token (Authorization: Bearer, as every admin route), because
/// every web page and local user reaches that listener; on the scrape listener (`metricsListen`), which
/// serves nothing else, it needs none: who may reach that address is the admin's choice.
struct MetricsController {
    let collector: MetricsCollector
    /// The clients that the API layer itself counts: open event streams and display viewers.
    let clients: @Sendable () -> (eventStreams: Int, displays: Int)

    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    func addRoutes(to router: Router<APIRequestContext>) {
        router.group("/metrics", context: AdminRequestContext.self).get(use: scrapeRoute)
    }

    /// The route without a token, for the scrape listener.
    func addOpenRoute<Context: RequestContext>(to router: Router<Context>) {
        router.get("/metrics") { _, _ in await scrape() }
    }

    @Sendable func scrapeRoute(_ request: Request, context: AdminRequestContext) async -> Response { await scrape() }

    func scrape() async -> Response {
        var snapshot = await collector.collect()
        let counts = clients()
        snapshot.eventStreamClients = counts.eventStreams
        snapshot.displayClients = counts.displays
        let text = collector.metrics.exposition(snapshot)
        var headers = HTTPFields()
        headers[.contentType] = Self.contentType
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: text)))
    }
}

/// Lets the scrape listener be reached by any IP address or `localhost` (Prometheus on this host, or on a
/// network the admin bound it to), but not by a DNS name: a web page that points its own name at the
/// listener (DNS rebinding) is refused, as on the daemon's listener.
struct ScrapeHostGuard<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let authority = request.head.authority, Self.isAddress(authority: authority) else {
            return VMSessionError(.forbiddenHost, "The Host header must be an IP address or localhost.").response()
        }
        return try await next(request, context)
    }

    static func isAddress(authority: String) -> Bool {
        if HostGuard<Context>.isLoopback(authority: authority) { return true }
        var host = Substring(authority)
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            let rest = host[host.index(after: close)...]
            guard rest.isEmpty || (rest.first == ":" && UInt16(rest.dropFirst()) != nil) else { return false }
            let inner = host[host.index(after: host.startIndex)..<close]
            return !inner.isEmpty && inner.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
        }
        if let colon = host.lastIndex(of: ":") {
            guard UInt16(host[host.index(after: colon)...]) != nil else { return false }
            host = host[..<colon]
        }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets.allSatisfy { $0.count <= 3 && UInt8($0) != nil }
    }
}
