import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization
import Testing

/// A real HTTP server on 127.0.0.1 standing in for a guest's API behind its forward, for the proxy's logic:
/// - `GET /hello`: a greeting, with the headers a guest should not get past the daemon (its own CORS
///   answer, a cookie, a hop-by-hop header) and one it should (`X-Guest`);
/// - `GET /`: `root ` and the target it was sent;
/// - `GET /headers`: the request's target and headers as JSON (what the guest was sent);
/// - `POST|PUT|PATCH|DELETE /echo`: the request body streamed back;
/// - `GET /redirect`: a 302 to `/hello`;
/// - `GET /slow`: answers after a minute (cancelled when the client leaves);
/// - `GET /hold`: answers once the test calls ``release()``;
/// - `GET /dribble`: its head at once, then a body of one byte a second for a minute;
/// - `GET /stall`: its head and a first chunk at once, then nothing until the test ends;
/// - `GET /page.html`: a page with the headers a guest could use to act on the daemon's origin;
/// - `GET /away`: a 302 to `//evil.example/`.
/// With `dribbleRoot`, `GET /` dribbles too: a guest whose probe answer never completes in time.
final class StandInGuest: Sendable {
    let requests = Mutex(0)
    private let gate: AsyncStream<Void>
    private let gateContinuation: AsyncStream<Void>.Continuation

    private init() { (gate, gateContinuation) = AsyncStream.makeStream(of: Void.self) }

    func release() { gateContinuation.finish() }
    var served: Int { requests.withLock { $0 } }

    /// Runs the server for the duration of `body`, which gets it and its port.
    static func run(dribbleRoot: Bool = false, _ body: @Sendable (StandInGuest, Int) async throws -> Void) async throws {
        let guest = StandInGuest()
        defer { guest.release() }
        let router = Router()
        router.add(middleware: Counter(guest: guest))
        let dribble = { @Sendable () -> Response in
            Response(
                status: .ok, headers: [.contentType: "text/plain"],
                body: ResponseBody { writer in
                    for _ in 0..<60 {
                        try await writer.write(ByteBuffer(string: "."))
                        try await Task.sleep(for: .seconds(1))
                    }
                    try await writer.finish(nil)
                })
        }
        router.get("/dribble") { _, _ in dribble() }
        router.get("/stall") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain"],
                body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: "first chunk;"))
                    for await _ in guest.gate {}
                    try await writer.finish(nil)
                })
        }
        router.get("/page.html") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/html; charset=utf-8"
            headers[.contentSecurityPolicy] = "default-src *"
            for (name, value) in [
                ("Service-Worker-Allowed", "/"), ("Clear-Site-Data", "\"*\""), ("Refresh", "0; url=http://evil.example/"),
                ("Origin-Agent-Cluster", "?1"), ("Link", "</sw.js>; rel=serviceworker"), ("WWW-Authenticate", "Basic realm=guest"),
            ] {
                headers[HTTPField.Name(name)!] = value
            }
            headers[.setCookie] = "guest=1; Path=/"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "<h1>guest page</h1>")))
        }
        router.get("/away") { _, _ in Response(status: .found, headers: [.location: "//evil.example/"]) }
        router.get("/hello") { _, _ in
            var headers = HTTPFields()
            headers[.accessControlAllowOrigin] = "*"
            headers[.accessControlAllowCredentials] = "true"
            headers[.setCookie] = "guest=1; Path=/"
            headers[.init("X-Guest")!] = "yes"
            headers[.init("Keep-Alive")!] = "timeout=5"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "hello from the guest")))
        }
        router.get("/") { request, _ in
            if dribbleRoot { return dribble() }
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "root \(request.head.path ?? "")")))
        }
        router.get("/headers") { request, _ in
            var fields: [String: String] = ["target": request.head.path ?? ""]
            for field in request.headers { fields[field.name.canonicalName] = field.value }
            let data = try JSONSerialization.data(withJSONObject: fields)
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        for method in [HTTPRequest.Method.post, .put, .patch, .delete] {
            router.on("/echo", method: method) { request, _ in
                Response(status: .ok, headers: [.init("X-Method")!: request.method.rawValue], body: .init(asyncSequence: request.body))
            }
        }
        router.get("/redirect") { _, _ in Response(status: .found, headers: [.location: "/hello"]) }
        router.get("/slow") { _, _ in
            try await Task.sleep(for: .seconds(60))
            return Response(status: .ok)
        }
        router.get("/hold") { _, _ in
            for await _ in guest.gate { break }
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "held")))
        }
        let (ports, portsContinuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portsContinuation.yield(channel.localAddress?.port ?? 0) },
            logger: Logger(label: "stand-in-guest"))
        try await withThrowingTaskGroup { group in
            group.addTask { try await app.run() }
            var iterator = ports.makeAsyncIterator()
            let port = try #require(await iterator.next())
            try await body(guest, port)
            guest.release()
            group.cancelAll()
        }
    }

    struct Counter: RouterMiddleware {
        typealias Context = BasicRequestContext
        let guest: StandInGuest
        func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
            guest.requests.withLock { $0 += 1 }
            return try await next(request, context)
        }
    }
}

/// A port where something accepts TCP connections and closes them at once, unanswered: a guest that breaks
/// the connection.
final class ConnectionBreaker: Sendable {
    let port: Int
    private let descriptor: Int32

    init() throws {
        let listening = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listening, $0, length) == 0 && getsockname(listening, $0, &length) == 0 && listen(listening, 16) == 0
            }
        }
        try #require(ok, "the breaker could not listen")
        port = Int(UInt16(bigEndian: address.sin_port))
        descriptor = listening
        Thread.detachNewThread {
            while true {
                let connection = accept(listening, nil, nil)
                if connection < 0 { return }
                var buffer = [UInt8](repeating: 0, count: 4096)
                _ = read(connection, &buffer, buffer.count)
                close(connection)
            }
        }
    }

    /// Stops accepting (the accepting thread ends with the socket).
    func stop() {
        shutdown(descriptor, Int32(SHUT_RDWR))
        close(descriptor)
    }
}
