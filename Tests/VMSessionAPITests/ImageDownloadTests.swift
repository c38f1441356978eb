import Crypto
import Foundation
import Logging
import Synchronization
import Testing
import VMSessionCore
import VMSessionDaemon
import VMSessionStore
import VMSessionTestSupport

/// Downloads of remote images from a real HTTP server on the loopback: progress, checksum, resume.
@Suite("Image downloads")
struct ImageDownloadTests {
    static let imageBytes = 4 * 1024 * 1024

    static func hex(_ data: Data) -> String { SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined() }

    /// An image store over an in-memory database and a temporary directory.
    static func withStore(_ body: (ImageStore, String) async throws -> Void) async throws {
        let scratch = try TemporaryDirectory("vms-img")
        let directory = scratch.path
        let logger = Logger(label: "test")
        let images = ImageStore(
            store: try SessionStore.inMemory(), catalog: ImageCatalog(applianceDirectory: directory + "/appliance"),
            directory: directory + "/images",
            downloader: ImageDownloader(retry: .init(attempts: 3, firstDelay: .milliseconds(20)), logger: logger), logger: logger)
        try await body(images, directory + "/images")
    }

    @Test("a good download reports monotonic progress with the total, and becomes the image")
    func goodDownload() async throws {
        let data = ImageServer.randomBytes(Self.imageBytes)
        try await ImageServer.run(serving: data) { server, url in
            try await Self.withStore { images, directory in
                try await images.registerRemote(version: "good-1", url: url, sha256: Self.hex(data), format: .raw)
                let seen = Mutex<[ImageDownloadProgress]>([])
                let image = try await images.ensureAvailable("good-1") { progress in seen.withLock { $0.append(progress) } }
                let path = directory + "/good-1.raw"
                #expect(image == .disk(path: path, format: "raw"))
                #expect(FileManager.default.contents(atPath: path) == data)
                #expect(!FileManager.default.fileExists(atPath: directory + "/good-1.part"))
                let reports = seen.withLock { $0 }
                #expect(!reports.isEmpty)
                #expect(reports.allSatisfy { $0.totalBytes == Int64(data.count) })
                #expect(zip(reports, reports.dropFirst()).allSatisfy { $0.bytes <= $1.bytes })
                #expect(reports.last?.bytes == Int64(data.count))
                #expect(server.served.fullRequests == 1)
                // Once there, it is used without another request.
                _ = try await images.ensureAvailable("good-1") { _ in }
                #expect(server.served.requests == 1)
                #expect(try await images.list().first { $0.version == "good-1" }?.record?.state == .available)
            }
        }
    }

    @Test("a download whose SHA-256 is wrong is refused, and nothing of it is kept or used")
    func wrongChecksum() async throws {
        let data = ImageServer.randomBytes(1024 * 1024)
        let wrong = Self.hex(Data("something else".utf8))
        try await ImageServer.run(serving: data) { _, url in
            try await Self.withStore { images, directory in
                try await images.registerRemote(version: "bad-1", url: url, sha256: wrong, format: .raw)
                let error = await #expect(throws: VMSessionError.self) { _ = try await images.ensureAvailable("bad-1") { _ in } }
                #expect(error?.code == .checksumMismatch)
                #expect(error?.message.contains(wrong) == true)
                #expect(error?.message.contains(Self.hex(data)) == true)
                let left = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
                #expect(left.isEmpty, "left behind: \(left)")
                let useError = await #expect(throws: VMSessionError.self) { _ = try await images.machineImage("bad-1") }
                #expect(useError?.code == .notFound)
                let entry = try await images.list().first { $0.version == "bad-1" }
                #expect(entry?.record?.state == .remote)
                #expect(entry?.lastError?.contains("SHA-256") == true)
            }
        }
    }

    @Test("a connection dropped half-way is resumed with Range, not started over")
    func resumesAfterDrop() async throws {
        let data = ImageServer.randomBytes(Self.imageBytes)
        try await ImageServer.run(serving: data, dropOnceAfter: Self.imageBytes / 2) { server, url in
            try await Self.withStore { images, directory in
                try await images.registerRemote(version: "resume-1", url: url, sha256: Self.hex(data), format: .raw)
                let seen = Mutex<[Int64]>([])
                _ = try await images.ensureAvailable("resume-1") { progress in seen.withLock { $0.append(progress.bytes) } }
                #expect(FileManager.default.contents(atPath: directory + "/resume-1.raw") == data)
                let served = server.served
                #expect(served.fullRequests == 1)
                #expect(served.rangeRequests >= 1)
                #expect(served.bytesServed < 2 * data.count)
                let bytes = seen.withLock { $0 }
                #expect(zip(bytes, bytes.dropFirst()).allSatisfy { $0 <= $1 })
            }
        }
    }

    @Test("a server that refuses the file fails the download with download_failed, and no image appears")
    func serverRefuses() async throws {
        let data = ImageServer.randomBytes(64 * 1024)
        try await ImageServer.run(serving: data) { server, url in
            try await Self.withStore { images, directory in
                try await images.registerRemote(version: "gone-1", url: url + "-missing", sha256: Self.hex(data), format: .raw)
                let error = await #expect(throws: VMSessionError.self) { _ = try await images.ensureAvailable("gone-1") { _ in } }
                #expect(error?.code == .downloadFailed)
                #expect(error?.message.contains("404") == true)
                #expect(!FileManager.default.fileExists(atPath: directory + "/gone-1.raw"))
            }
        }
    }

    @Test("registering refuses bad versions, URLs, checksums and missing files, and changes nothing")
    func registerRefusesBadInput() async throws {
        try await Self.withStore { images, directory in
            let sha = String(repeating: "a", count: 64)
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let fifo = directory + "/fifo"
            #expect(mkfifo(fifo, 0o600) == 0)
            let cases: [(String, VMSessionError.Code, () async throws -> Void)] = [
                ("version", .invalidArgument, { try await images.registerRemote(version: "../x", url: "http://h/x", sha256: sha, format: nil) }),
                ("appliance", .invalidArgument, { try await images.registerRemote(version: "appliance", url: "http://h/x", sha256: sha, format: nil) }),
                ("url", .invalidArgument, { try await images.registerRemote(version: "a1", url: "file:///etc/passwd", sha256: sha, format: nil) }),
                ("url", .invalidArgument, { try await images.registerRemote(version: "a1", url: "http://h/x#frag", sha256: sha, format: nil) }),
                ("sha256", .invalidArgument, { try await images.registerRemote(version: "a1", url: "http://h/x", sha256: "abc", format: nil) }),
                // A missing file is not found; a FIFO or device is refused at once, without blocking on it.
                ("path", .notFound, { try await images.register(version: "a1", file: directory + "/nothing.qcow2", format: nil) }),
                ("path", .invalidArgument, { try await images.register(version: "a1", file: "relative.qcow2", format: nil) }),
                ("path", .invalidArgument, { try await images.register(version: "a1", file: fifo, format: nil) }),
                ("path", .invalidArgument, { try await images.register(version: "a1", file: "/dev/zero", format: nil) }),
                ("path", .invalidArgument, { try await images.register(version: "a1", file: directory + "/", format: nil) }),
            ]
            for (field, code, attempt) in cases {
                let error = await #expect(throws: VMSessionError.self) { try await attempt() }
                #expect(error?.code == code, "\(field): \(error?.message ?? "")")
                #expect(error?.message.contains(field == "appliance" ? "appliance" : "'\(field)'") == true, "\(field): \(error?.message ?? "")")
            }
            let versions = try await images.list().map(\.version)
            #expect(versions == ["appliance"])
        }
    }

    @Test("a registered local file is hashed and its format detected")
    func registersLocalFile() async throws {
        try await Self.withStore { images, directory in
            let file = directory + "/local.img"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let data = ImageServer.randomBytes(256 * 1024)
            #expect(FileManager.default.createFile(atPath: file, contents: data))
            let record = try await images.register(version: "local-1", file: file, format: nil)
            #expect(record.sha256 == Self.hex(data))
            #expect(record.format == .raw)
            #expect(record.size == Int64(data.count))
            #expect(try await images.machineImage("local-1") == .disk(path: file, format: "raw"))
            let again = await #expect(throws: VMSessionError.self) { try await images.register(version: "local-1", file: file, format: nil) }
            #expect(again?.code == .invalidState)
            try await images.remove("local-1")
            #expect(FileManager.default.fileExists(atPath: file), "a registered file is the user's, not deleted")
        }
    }

    @Test("an image that names a backing file or an external data file is refused, and nothing is registered")
    func refusesImagesThatReferToHostFiles() async throws {
        try await Self.withStore { images, directory in
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let backed = directory + "/backed.qcow2"
            let result = try await Self.qemuImg(["create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", backed, "1M"])
            try #require(result == 0)
            let error = await #expect(throws: VMSessionError.self) { try await images.register(version: "backed", file: backed, format: nil) }
            #expect(error?.code == .notValidated)
            #expect(error?.message.contains("/etc/hostname") == true)
            let plain = directory + "/plain.qcow2"
            try #require(try await Self.qemuImg(["create", "-q", "-f", "qcow2", plain, "1M"]) == 0)
            _ = try await images.register(version: "plain", file: plain, format: nil)
            #expect(try await images.list().map(\.version).contains("backed") == false)
        }
    }

    static func qemuImg(_ arguments: [String]) async throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-img")
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
