import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import VMSessionCore
import VMSessionHypervisor
import VMSessionStore

/// The image catalog: which `version`s a session can be opened with, and their files. The built-in
/// appliance comes from ``ImageCatalog``; every other image is a row in SQLite, either a registered local
/// file or a remote one (URL + SHA-256) that is downloaded on its first use or on `pull`.
///
/// A download is checked against its SHA-256 before it is renamed into place, so a partial or corrupt file
/// is never used. One download runs per version: the first caller fetches, later callers wait for it and
/// see its progress. Background pulls run in ``run()``'s task group.
public actor ImageStore: Service {
    /// One image as listed: the stored record (nil for the built-in appliance) and what is happening to it.
    public struct Entry: Sendable {
        public let version: String
        public let record: ImageRecord?
        /// Whether the built-in appliance's files are there (nil for other images).
        public let builtInReady: Bool?
        public let download: ImageDownloadProgress?
        /// Why the last download of this version failed, until one succeeds.
        public let lastError: String?
    }

    public typealias ProgressHandler = @Sendable (ImageDownloadProgress) async -> Void

    let store: SessionStore
    public nonisolated let catalog: ImageCatalog
    /// Where downloads go: `<stateDir>/images`.
    public nonisolated let directory: String
    let downloader: ImageDownloader
    let logger: Logger

    /// A download under way and who waits for it.
    private struct Download {
        var waiters: [CheckedContinuation<Void, any Error>] = []
        var observers: [UUID: ProgressHandler] = [:]
        var latest: ImageDownloadProgress?
    }
    private var downloads: [String: Download] = [:]
    private var lastErrors: [String: String] = [:]
    /// The versions ``versions()`` read last, until an image is added or removed: what `GET /api/v1` shows
    /// without a hop to this actor and a database read per request.
    private nonisolated let listed = Mutex<[String]?>(nil)
    private let pulls: AsyncStream<String>
    private let pullsContinuation: AsyncStream<String>.Continuation
    /// Its catalog writes to SQLite inside isolated code: on a thread of its own, as ``SessionManager``.
    private let executor = BlockingExecutor(label: "vmsessiond.image-store")
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    public init(store: SessionStore, catalog: ImageCatalog, directory: String, downloader: ImageDownloader, logger: Logger) {
        self.store = store
        self.catalog = catalog
        self.directory = directory
        self.downloader = downloader
        self.logger = logger
        (pulls, pullsContinuation) = AsyncStream.makeStream(of: String.self)
    }

    // MARK: Service

    /// Runs background pulls until graceful shutdown; a pull cut short keeps its `.part` file, and the next
    /// attempt resumes it.
    public func run() async throws {
        let pulls = self.pulls
        await withDiscardingTaskGroup { group in
            for await version in pulls.cancelOnGracefulShutdown() {
                group.addTask {
                    do {
                        _ = try await self.ensureAvailable(version, progress: { _ in })
                    } catch {
                        self.logger.warning("image pull failed", metadata: ["version": "\(version)", "error": "\(error)"])
                    }
                }
            }
            group.cancelAll()
        }
    }

    // MARK: Catalog

    /// Every version that can be opened, the appliance first.
    public func versions() -> [String] {
        if let known = knownVersions { return known }
        guard let stored = try? store.allImages().map(\.version) else { return catalog.versions }
        listed.withLock { $0 = catalog.versions + stored }
        return catalog.versions + stored
    }

    /// ``versions()`` as last read, if no image was added or removed since; nil otherwise.
    public nonisolated var knownVersions: [String]? { listed.withLock { $0 } }

    public func list() throws(VMSessionError) -> [Entry] {
        let applianceReady = (try? catalog.image(for: ImageCatalog.applianceVersion)) != nil
        var entries = [
            Entry(version: ImageCatalog.applianceVersion, record: nil, builtInReady: applianceReady, download: nil, lastError: nil)
        ]
        for record in try storeCall({ try store.allImages() }) {
            entries.append(
                Entry(
                    version: record.version, record: record, builtInReady: nil, download: downloads[record.version]?.latest,
                    lastError: lastErrors[record.version]))
        }
        return entries
    }

    /// Checks that `version` names an image (built in, available or remote), without fetching anything; an
    /// available image's file is re-verified (see ``ImageFile``), so that `open` is refused before any state
    /// changes when it was swapped.
    public func check(_ version: String) async throws(VMSessionError) {
        if version == ImageCatalog.applianceVersion { return }
        guard let record = try storeCall({ try store.image(version) }) else {
            throw VMSessionError(
                .notFound, "There is no image for version '\(version)'; known versions: \(versions().joined(separator: ", ")).")
        }
        if record.state == .available { try await Self.verify(record) }
    }

    /// Registers a local file as image `version`, with its SHA-256. The file stays where it is and is never
    /// written to (sessions get overlays on it); `remove` forgets it without deleting it.
    @discardableResult
    public func register(version: String, file: String, format: ImageRecord.Format?) async throws(VMSessionError) -> ImageRecord {
        try Self.validate(version: version)
        // As ImageAddRequest.path in Schema/openapi.yaml: absolute, no empty or over-long component, no NUL.
        let components = file.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard file.hasPrefix("/"), !file.utf8.contains(0), file.utf8.count < 4096,
            components.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 255 })
        else {
            throw VMSessionError(
                .invalidArgument, "'path' must be an absolute path to a file (components of 1 to 255 bytes, not ending in '/'); got '\(file)'.")
        }
        // By descriptor, without blocking: a FIFO, a device or a symlink is refused at once.
        let image: ImageFile
        do throws(VMSessionError) {
            image = try ImageFile(file)
        } catch {
            throw VMSessionError(error.code, "'path' must name a readable regular file: \(error.message)", cause: error)
        }
        try check(absent: version)
        try await DiskImageInspector.checkSelfContained(file)
        let (digest, identity) = try await Self.fingerprint(image)
        let record = ImageRecord(
            version: version, format: format ?? Self.detectFormat(file), path: file, sha256: digest,
            size: image.size, state: .available, addedAt: Date(), identity: identity)
        // Re-check after the await: the version may have been taken meanwhile (addImage refuses that too).
        try storeCall { try store.addImage(record) }
        listed.withLock { $0 = nil }
        lastErrors[version] = nil
        logger.info("image registered", metadata: ["version": "\(version)", "path": "\(file)", "sha256": "\(digest)"])
        return record
    }

    /// Registers image `version` to be downloaded from `url` (http or https) and checked against `sha256`.
    /// With `pull`, the download starts in the background at once; otherwise on the first open.
    @discardableResult
    public func registerRemote(
        version: String, url: String, sha256: String, format: ImageRecord.Format?, pull: Bool = false
    ) throws(VMSessionError) -> ImageRecord {
        try Self.validate(version: version)
        guard url.utf8.count <= 2048, (try? Self.urlPattern.wholeMatch(in: url)) != nil, let parsed = URL(string: url),
            let scheme = parsed.scheme?.lowercased(), scheme == "http" || scheme == "https", let host = parsed.host, !host.isEmpty
        else {
            throw VMSessionError(
                .invalidArgument, "'url' must be an http:// or https:// URL with a host name, without query or fragment; got '\(url)'.")
        }
        guard FileDigest.isHexDigest(sha256) else {
            throw VMSessionError(.invalidArgument, "'sha256' must be 64 hexadecimal digits; got '\(sha256)'.")
        }
        try check(absent: version)
        let format = format ?? .qcow2
        let record = ImageRecord(
            version: version, format: format, path: finalPath(version, format), sha256: sha256.lowercased(), url: url,
            state: .remote, addedAt: Date())
        try storeCall { try store.addImage(record) }
        listed.withLock { $0 = nil }
        logger.info("remote image registered", metadata: ["version": "\(version)", "url": "\(url)"])
        if pull { pullsContinuation.yield(version) }
        return record
    }

    /// Forgets image `version`. A downloaded file (under ``directory``) is deleted; a registered local file
    /// is left where it is. The caller makes sure no session uses it (see ``SessionManager/removeImage(_:)``).
    public func remove(_ version: String) throws(VMSessionError) {
        guard version != ImageCatalog.applianceVersion else {
            throw VMSessionError(.notAllowed, "The built-in appliance cannot be removed.")
        }
        guard let record = try storeCall({ try store.image(version) }) else {
            throw VMSessionError(.notFound, "There is no image for version '\(version)'.")
        }
        guard downloads[version] == nil else {
            throw VMSessionError(.invalidState, "Image '\(version)' is being downloaded; remove it when the download has ended.")
        }
        try storeCall { try store.removeImage(version) }
        listed.withLock { $0 = nil }
        if record.url != nil {
            try? FileManager.default.removeItem(atPath: record.path)
            try? FileManager.default.removeItem(atPath: partPath(version))
        }
        lastErrors[version] = nil
        logger.info("image removed", metadata: ["version": "\(version)"])
    }

    // MARK: Using images

    /// What a VM of `version` boots, if it is there now; `not_found` for an unknown version or an image not
    /// downloaded yet. Never downloads.
    public func machineImage(_ version: String) async throws(VMSessionError) -> MachineImage {
        if version == ImageCatalog.applianceVersion { return try catalog.image(for: version) }
        guard let record = try storeCall({ try store.image(version) }) else {
            throw VMSessionError(.notFound, "There is no image for version '\(version)'.")
        }
        guard record.state == .available else {
            throw VMSessionError(.notFound, "Image '\(version)' has not been downloaded yet.")
        }
        var entry = stat()
        guard lstat(record.path, &entry) == 0 else {
            throw VMSessionError(.notFound, "The file of image '\(version)' (\(record.path)) is missing.")
        }
        // Trusted for what was verified only: the same file, re-checked by descriptor.
        try await Self.verify(record)
        return .disk(path: record.path, format: record.format.rawValue)
    }

    /// What a VM of `version` boots, downloading the image first if it is remote. Concurrent callers for one
    /// version share one download, and each sees its progress through `progress`.
    public func ensureAvailable(_ version: String, progress: @escaping ProgressHandler) async throws(VMSessionError) -> MachineImage {
        guard version != ImageCatalog.applianceVersion,
            let record = try storeCall({ try store.image(version) }), record.state == .remote
        else { return try await machineImage(version) }
        let observer = UUID()
        if downloads[version] != nil {
            downloads[version]?.observers[observer] = progress
            if let latest = downloads[version]?.latest { await progress(latest) }
            do {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    // Re-check: the download may have ended while the latest progress was passed on.
                    if downloads[version] != nil {
                        downloads[version]?.waiters.append(continuation)
                    } else {
                        continuation.resume()
                    }
                }
            } catch {
                throw (error as? VMSessionError) ?? VMSessionError(.downloadFailed, "\(error)", cause: error)
            }
            // The downloader's outcome is in the database (or it failed, and threw above).
            return try await machineImage(version)
        }
        downloads[version] = Download(observers: [observer: progress])
        let result: Result<Void, VMSessionError>
        do {
            try await download(record)
            result = .success(())
        } catch {
            result = .failure(error)
        }
        let waiters = downloads.removeValue(forKey: version)?.waiters ?? []
        switch result {
        case .success:
            lastErrors[version] = nil
            for waiter in waiters { waiter.resume() }
            return try await machineImage(version)
        case .failure(let error):
            lastErrors[version] = error.message
            for waiter in waiters { waiter.resume(throwing: error) }
            throw error
        }
    }

    /// Fetches, verifies and installs a remote image; the `.part` file becomes the image only when its
    /// SHA-256 is the registered one.
    private func download(_ record: ImageRecord) async throws(VMSessionError) {
        guard let url = record.url else { throw VMSessionError(.internalError, "A remote image has no URL.") }
        let version = record.version
        let part = partPath(version)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw VMSessionError(.ioError, "Cannot create the image directory \(directory).", cause: error)
        }
        logger.info("image download started", metadata: ["version": "\(version)", "url": "\(url)"])
        try await downloader.fetch(url, to: part) { progress in await self.publish(version, progress) }
        let digest = try await Self.digest(of: part)
        guard digest == record.sha256 else {
            try? FileManager.default.removeItem(atPath: part)
            throw VMSessionError(
                .checksumMismatch,
                "The download of image '\(version)' from \(url) has SHA-256 \(digest), expected \(record.sha256); it was deleted.")
        }
        do {
            try await DiskImageInspector.checkSelfContained(part)
        } catch {
            try? FileManager.default.removeItem(atPath: part)
            throw error
        }
        if rename(part, record.path) != 0 {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: part)
            throw VMSessionError(.ioError, "Cannot move the downloaded image into place at \(record.path): \(reason).")
        }
        let installed = try ImageFile(record.path)
        var available = record
        available.state = .available
        available.size = installed.size
        available.identity = installed.identity
        try storeCall { try store.updateImage(available) }
        logger.info("image downloaded", metadata: ["version": "\(version)", "bytes": "\(available.size ?? 0)"])
    }

    /// Passes a download's progress to everyone waiting for it. Bytes never go backwards, even when a
    /// server that ignores `Range` makes the download start over.
    private func publish(_ version: String, _ progress: ImageDownloadProgress) async {
        guard var download = downloads[version] else { return }
        var progress = progress
        progress.bytes = max(progress.bytes, download.latest?.bytes ?? 0)
        download.latest = progress
        downloads[version] = download
        for observer in download.observers.values { await observer(progress) }
    }

    // MARK: Helpers

    nonisolated func partPath(_ version: String) -> String { "\(directory)/\(version).part" }
    nonisolated func finalPath(_ version: String, _ format: ImageRecord.Format) -> String {
        "\(directory)/\(version).\(format.rawValue)"
    }

    /// What `pull` takes as a URL; the same pattern as `ImagePullRequest.url` in Schema/openapi.yaml.
    nonisolated(unsafe) static let urlPattern = #/[hH][tT][tT][pP][sS]?://[A-Za-z0-9.-]+(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?/#

    static func validate(version: String) throws(VMSessionError) {
        guard Identifier.isValid(version, maxLength: 64) else {
            throw VMSessionError(.invalidArgument, "'version' must be 1 to 64 letters, digits, '.', '_' or '-'; got '\(version)'.")
        }
        guard version != ImageCatalog.applianceVersion else {
            throw VMSessionError(.invalidArgument, "'\(version)' is the built-in appliance's version; choose another.")
        }
    }

    private func check(absent version: String) throws(VMSessionError) {
        if try storeCall({ try store.image(version) }) != nil {
            throw VMSessionError(.invalidState, "An image with version '\(version)' exists; remove it first.")
        }
    }

    /// Hashes off the actor, so listing and other callers are not held up by a large file.
    @concurrent private nonisolated static func digest(of path: String) async throws(VMSessionError) -> String {
        try FileDigest.sha256(ofFile: path)
    }

    /// The SHA-256 and identity of an opened file, off the actor; refused if the file changed while it was read.
    @concurrent private nonisolated static func fingerprint(_ file: ImageFile) async throws(VMSessionError) -> (String, String) {
        let digest = try file.sha256()
        guard try file.currentIdentity() == file.identity else {
            throw VMSessionError(.invalidArgument, "\(file.path) changed while it was being hashed; register it when it is complete.")
        }
        return (digest, file.identity)
    }

    /// Re-checks an image's file before use, off the actor (a record without identity is re-hashed).
    @concurrent private nonisolated static func verify(_ record: ImageRecord) async throws(VMSessionError) {
        try ImageFile.verify(path: record.path, version: record.version, identity: record.identity, sha256: record.sha256)
    }

    /// `qcow2` if the file starts with QEMU's qcow magic, else `raw`.
    static func detectFormat(_ path: String) -> ImageRecord.Format {
        guard let handle = FileHandle(forReadingAtPath: path) else { return .raw }
        defer { try? handle.close() }
        let magic = (try? handle.read(upToCount: 4)) ?? Data()
        return magic == Data([0x51, 0x46, 0x49, 0xFB]) ? .qcow2 : .raw
    }
}
