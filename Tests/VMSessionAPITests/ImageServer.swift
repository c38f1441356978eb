import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization
import Testing

/// A small HTTP server on 127.0.0.1 (a port of its own) that serves one file at `/image`, honours
/// `Range: bytes=N-`, can drop the connection once after some bytes, can hold a response after its first
/// chunk until the test lets it go, and counts what it served.
final class ImageServer: Sendable {
    struct Counters {
        var requests = 0
        /// Requests without `Range`: each one is a download from the start.
        var fullRequests = 0
        var rangeRequests = 0
        var bytesServed = 0
    }

    let data: Data
    let counters = Mutex(Counters())
    private let dropOnceAfter: Mutex<Int?>
    private let hold: Bool
    private let gate: AsyncStream<Void>
    private let gateContinuation: AsyncStream<Void>.Continuation
    static let chunkBytes = 64 * 1024

    private init(data: Data, dropOnceAfter: Int?, hold: Bool) {
        self.data = data
        self.dropOnceAfter = Mutex(dropOnceAfter)
        self.hold = hold
        (gate, gateContinuation) = AsyncStream.makeStream(of: Void.self)
    }

    var served: Counters { counters.withLock { $0 } }

    /// Lets a held response go on.
    func release() { gateContinuation.finish() }

    /// Runs a server for the duration of `body`, which gets the server and the image's URL.
    static func run(
        serving data: Data, dropOnceAfter: Int? = nil, hold: Bool = false,
        _ body: @Sendable (ImageServer, String) async throws -> Void
    ) async throws {
        let server = ImageServer(data: data, dropOnceAfter: dropOnceAfter, hold: hold)
        defer { server.release() }
        let router = Router()
        router.get("/image") { request, _ in server.respond(to: request) }
        let (ports, portsContinuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portsContinuation.yield(channel.localAddress?.port ?? 0) },
            logger: Logger(label: "image-server"))
        try await withThrowingTaskGroup { group in
            group.addTask { try await app.run() }
            var iterator = ports.makeAsyncIterator()
            let port = try #require(await iterator.next())
            try await body(server, "http://127.0.0.1:\(port)/image")
            server.release()
            group.cancelAll()
        }
    }

    private func respond(to request: Request) -> Response {
        var start = 0
        if let range = request.headers[.range], range.hasPrefix("bytes="),
            let first = range.dropFirst("bytes=".count).split(separator: "-").first, let offset = Int(first)
        {
            start = min(offset, data.count)
        }
        counters.withLock {
            $0.requests += 1
            if start > 0 { $0.rangeRequests += 1 } else { $0.fullRequests += 1 }
        }
        let slice = data.subdata(in: start..<data.count)
        let drop = dropOnceAfter.withLock { value in
            defer { value = nil }
            return value
        }
        var headers = HTTPFields()
        if start > 0 { headers[.contentRange] = "bytes \(start)-\(data.count - 1)/\(data.count)" }
        let body = ResponseBody(contentLength: slice.count) { writer in
            var sent = 0
            while sent < slice.count {
                let limit = drop.map { min($0, slice.count) } ?? slice.count
                if sent >= limit {
                    // Ends the response half-way: the client sees the connection close early.
                    throw CancellationError()
                }
                let end = min(sent + Self.chunkBytes, limit)
                try await writer.write(ByteBuffer(bytes: slice[slice.startIndex + sent..<slice.startIndex + end]))
                self.counters.withLock { $0.bytesServed += end - sent }
                if sent == 0, self.hold {
                    for await _ in self.gate { break }
                }
                sent = end
            }
            try await writer.finish(nil)
        }
        return Response(status: start > 0 ? .partialContent : .ok, headers: headers, body: body)
    }

    /// `count` bytes that do not repeat in any way a checksum could miss.
    static func randomBytes(_ count: Int) -> Data {
        var generator = SystemRandomNumberGenerator()
        var data = Data(capacity: count)
        for _ in 0..<(count / 8) { withUnsafeBytes(of: generator.next() as UInt64) { data.append(contentsOf: $0) } }
        return data
    }
}
