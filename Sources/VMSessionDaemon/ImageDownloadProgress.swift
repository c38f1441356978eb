import Foundation

/// How far an image download is, as the downloader reports it to everyone waiting for that image.
/// `totalBytes` is nil when the server did not say how long the file is: no total is ever guessed.
public struct ImageDownloadProgress: Equatable, Sendable {
    /// Bytes of the file that are on disk (including what an earlier, interrupted attempt fetched).
    public var bytes: Int64
    public var totalBytes: Int64?
    /// The transfer rate of the current attempt.
    public var bytesPerSecond: Double

    public init(bytes: Int64, totalBytes: Int64?, bytesPerSecond: Double) {
        self.bytes = bytes
        self.totalBytes = totalBytes
        self.bytesPerSecond = bytesPerSecond
    }

    /// "Downloading image 'x': 12.0 of 40.0 MiB at 8.1 MiB/s" (without "of …" when the size is unknown).
    public func message(version: String) -> String {
        let done = Self.mebibytes(bytes)
        let size = totalBytes.map { " of \(Self.mebibytes($0))" } ?? ""
        return "Downloading image '\(version)': \(done)\(size) MiB at \(Self.mebibytes(Int64(bytesPerSecond))) MiB/s"
    }

    static func mebibytes(_ bytes: Int64) -> String {
        String(format: "%.1f", Double(bytes) / 1_048_576)
    }
}
