import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import VMSessionCore

/// Fetches one image over HTTP(S) into a `.part` file, resuming with `Range` after a dropped connection and
/// retrying with exponential backoff. It only fetches bytes: checking them and making them the image is
/// ``ImageStore``'s job, so a partial file never becomes an image.
public struct ImageDownloader: Sendable {
    /// How often to try and how long to wait in between.
    public struct Retry: Sendable {
        /// Attempts in a row that may fail without fetching anything before the download gives up. An
        /// attempt that fetched bytes before failing starts the count again.
        public var attempts: Int
        /// The wait after the first failure; it doubles after each further one.
        public var firstDelay: Duration

        public init(attempts: Int = 3, firstDelay: Duration = .milliseconds(500)) {
            self.attempts = attempts
            self.firstDelay = firstDelay
        }
    }

    /// A client whose reads time out when a server stalls; it lives as long as the process, from the first
    /// download on: a daemon that never downloads an image never builds it (its connection pool and TLS set-up).
    static let sharedClient = HTTPClient(
        eventLoopGroup: HTTPClient.defaultEventLoopGroup,
        configuration: .init(
            redirectConfiguration: .follow(max: 5, allowCycles: false),
            timeout: .init(connect: .seconds(15), read: .seconds(60)), connectionPool: .init()))

    /// The client given, else nil for ``sharedClient``, which is only made when a download starts.
    private let givenClient: HTTPClient?
    var client: HTTPClient { givenClient ?? Self.sharedClient }
    let retry: Retry
    let logger: Logger
    /// How often progress is reported while bytes flow (the last report always comes).
    static let reportInterval: Duration = .milliseconds(100)

    public init(client: HTTPClient? = nil, retry: Retry = .init(), logger: Logger) {
        givenClient = client
        self.retry = retry
        self.logger = logger
    }

    /// A failure that another attempt cannot fix (the server refuses the request).
    private struct Permanent: Error {
        let error: VMSessionError
    }

    /// Downloads `url` into `partPath`, continuing from what the file already holds; returns when the
    /// server has sent the whole file.
    @concurrent func fetch(
        _ url: String, to partPath: String, report: @escaping @Sendable (ImageDownloadProgress) async -> Void
    ) async throws(VMSessionError) {
        var failures = 0
        var delay = retry.firstDelay
        while true {
            let before = Self.size(of: partPath)
            do {
                try await attempt(url, partPath: partPath, report: report)
                return
            } catch let permanent as Permanent {
                throw permanent.error
            } catch {
                if Task.isCancelled {
                    throw VMSessionError(.downloadFailed, "The download of \(url) was cancelled; what it fetched is kept for the next attempt.")
                }
                let progressed = Self.size(of: partPath) > before
                failures = progressed ? 1 : failures + 1
                if progressed { delay = retry.firstDelay }
                guard failures < retry.attempts else {
                    throw VMSessionError(
                        .downloadFailed, "Downloading \(url) failed \(failures) times in a row; the last error: \(error)", cause: error)
                }
                logger.notice(
                    "image download interrupted; retrying",
                    metadata: ["url": "\(url)", "error": "\(error)", "bytes": "\(Self.size(of: partPath))", "in": "\(delay)"])
                try? await Task.sleep(for: delay)
                delay *= 2
            }
        }
    }

    /// One request: resumes with `Range` if the part file has bytes, starts over when the server answers `200`.
    private func attempt(
        _ url: String, partPath: String, report: @escaping @Sendable (ImageDownloadProgress) async -> Void
    ) async throws {
        let offset = Self.size(of: partPath)
        var request = HTTPClientRequest(url: url)
        if offset > 0 { request.headers.add(name: "Range", value: "bytes=\(offset)-") }
        let response = try await client.execute(request, timeout: .seconds(60))
        var received: Int64
        var total: Int64?
        switch response.status.code {
        case 200:
            received = 0
            total = response.headers.first(name: "Content-Length").flatMap { Int64($0) }
            guard FileManager.default.createFile(atPath: partPath, contents: nil) else {
                throw Permanent(error: VMSessionError(.ioError, "Cannot write \(partPath)."))
            }
        case 206 where offset > 0:
            guard let range = response.headers.first(name: "Content-Range").flatMap(ContentRange.init), range.start == offset else {
                // Not the bytes that were asked for: drop what is there and start over on the next attempt.
                try? FileManager.default.removeItem(atPath: partPath)
                throw VMSessionError(.downloadFailed, "The server answered a range request with other bytes than asked for.")
            }
            received = offset
            total = range.total
        case 416 where offset > 0:
            try? FileManager.default.removeItem(atPath: partPath)
            throw VMSessionError(.downloadFailed, "The server cannot continue from byte \(offset); starting over.")
        case 400..<500:
            throw Permanent(error: VMSessionError(.downloadFailed, "The server refused \(url): HTTP \(response.status.code)."))
        default:
            throw VMSessionError(.downloadFailed, "The server answered \(url) with HTTP \(response.status.code).")
        }
        guard let handle = FileHandle(forWritingAtPath: partPath) else {
            throw Permanent(error: VMSessionError(.ioError, "Cannot write \(partPath)."))
        }
        defer { try? handle.close() }
        try handle.seekToEnd()
        let clock = ContinuousClock()
        let started = clock.now
        var lastReport: ContinuousClock.Instant?
        let first = received
        func progress() -> ImageDownloadProgress {
            let seconds = started.duration(to: clock.now).inSeconds
            return ImageDownloadProgress(
                bytes: received, totalBytes: total, bytesPerSecond: seconds > 0 ? Double(received - first) / seconds : 0)
        }
        for try await buffer in response.body {
            try handle.write(contentsOf: Data(buffer.readableBytesView))
            received += Int64(buffer.readableBytes)
            // The first bytes are reported at once, then at most every reportInterval.
            if lastReport.map({ $0.duration(to: clock.now) >= Self.reportInterval }) ?? true {
                lastReport = clock.now
                await report(progress())
            }
        }
        try handle.synchronize()
        await report(progress())
        if let total, received != total {
            throw VMSessionError(.downloadFailed, "The connection ended after \(received) of \(total) bytes.")
        }
    }

    static func size(of path: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
    }

    /// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
    struct ContentRange {
        let start: Int64
        let total: Int64?

        init?(_ header: String) {
            guard header.hasPrefix("bytes ") else { return nil }
            let spec = header.dropFirst("bytes ".count)
            let parts = spec.split(separator: "/", maxSplits: 1)
            guard parts.count == 2, let dash = parts[0].firstIndex(of: "-"), let start = Int64(parts[0][..<dash]) else { return nil }
            self.start = start
            self.total = parts[1] == "*" ? nil : Int64(parts[1])
        }
    }
}
