import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import VMSessionCore
import VMSessionStore
import VMSessionTestSupport

/// The image routes and sessions on downloaded images, through the real router and session manager.
@Suite("Image routes")
struct ImageRoutesTests {
    /// A real, small qcow2 made by qemu-img.
    static func makeQcow2(in directory: String) throws -> Data {
        let path = directory + "/made.qcow2"
        try run("/usr/bin/env", ["qemu-img", "create", "-q", "-f", "qcow2", path, "64M"])
        return try #require(FileManager.default.contents(atPath: path))
    }

    @discardableResult
    static func run(_ program: String, _ arguments: [String]) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(arguments)")
        return output
    }

    static func progressEvents(_ fixture: APIFixture, session: String) throws -> [[String: Any]] {
        let id = try #require(SessionID(session))
        return try fixture.store.events(for: id, after: 0).filter { $0.kind == .progress }.compactMap {
            try JSONSerialization.jsonObject(with: Data($0.payload.utf8)) as? [String: Any]
        }
    }

    @Test("two opens of one remote version share one download; disks are overlays; closing leaves the image")
    func concurrentOpensShareOneDownload() async throws {
        let scratch = try TemporaryDirectory("vms-q")
        let image = try Self.makeQcow2(in: scratch.path)
        let sha = SHA256.hash(data: image).map { String(format: "%02x", $0) }.joined()
        try await ImageServer.run(serving: image, hold: true) { server, url in
            try await APIFixture.run { client, fixture in
                let admin = fixture.adminToken
                // Registered without pulling, so the first open downloads.
                try await fixture.images.registerRemote(version: "shared-1", url: url, sha256: sha, format: .qcow2)
                let a = try await client.newSession()
                let b = try await client.newSession()
                let body = #"{"cpus":1,"memory":128,"disk":256,"version":"shared-1"}"#
                let openA = try await client.call(.post, "/api/v1/sessions/\(a.id)/open", token: a.token, body: body)
                let openB = try await client.call(.post, "/api/v1/sessions/\(b.id)/open", token: b.token, body: body)
                #expect(openA.status == .accepted && openB.status == .accepted)
                // The server holds the file after its first chunk until both opens follow the download (their
                // operations show its bytes; events are throttled, the operation always has the latest).
                let operations = try [openA, openB].map { try #require(($0["operation"] as? [String: Any])?["id"] as? String) }
                var following = false
                for _ in 0..<400 where !following {
                    var bytes: [Int] = []
                    for operation in operations {
                        let progress = try await client.call(.get, "/api/v1/operations/\(operation)", token: admin)["progress"] as? [String: Any]
                        if let value = progress?["bytes"] as? Int, (progress?["message"] as? String)?.hasPrefix("Downloading image 'shared-1'") == true {
                            bytes.append(value)
                        }
                    }
                    following = bytes.count == 2 && bytes.allSatisfy { $0 > 0 }
                    if !following { try await Task.sleep(for: .milliseconds(25)) }
                }
                #expect(following, "both opens report the download's bytes")
                let listed = try await client.call(.get, "/api/v1/images/shared-1", token: admin)
                #expect(listed["state"] as? String == "downloading")
                #expect((listed["download"] as? [String: Any])?["totalBytes"] as? Int == image.count)
                server.release()
                for session in [a, b] {
                    let settled = try await client.settled(session.id, token: session.token)
                    #expect(settled["state"] as? String == "open", "\(settled)")
                }
                #expect(server.served.fullRequests == 1)
                #expect(server.served.requests == 1)

                let imagePath = fixture.directory + "/images/shared-1.qcow2"
                for session in [a, b] {
                    let events = try Self.progressEvents(fixture, session: session.id)
                    // Events are throttled (any may be skipped but the last); those that carry bytes never go back.
                    let bytes = events.compactMap { $0["bytes"] as? Int }
                    #expect(zip(bytes, bytes.dropFirst()).allSatisfy { $0 <= $1 })
                    #expect(events.compactMap { $0["totalBytes"] as? Int }.allSatisfy { $0 == image.count })
                    // The session's disk is an overlay whose backing file is the image, not a copy of it.
                    let disk = fixture.directory + "/machines/\(session.id)/disk.qcow2"
                    let info = try JSONSerialization.jsonObject(with: Self.run("/usr/bin/env", ["qemu-img", "info", "--output=json", disk])) as? [String: Any]
                    #expect(info?["backing-filename"] as? String == imagePath)
                    #expect(info?["backing-filename-format"] as? String == "qcow2")
                }

                // In use: it cannot be removed.
                let refused = try await client.call(.delete, "/api/v1/images/shared-1", token: admin)
                #expect(refused.status == .conflict)
                #expect(refused.errorCode == "invalid_state")

                for session in [a, b] {
                    let close = try await client.call(.post, "/api/v1/sessions/\(session.id)/close", token: session.token)
                    #expect(close.status == .accepted)
                    _ = try await client.settled(session.id, token: session.token)
                    #expect(!FileManager.default.fileExists(atPath: fixture.directory + "/machines/\(session.id)"))
                    #expect(FileManager.default.contents(atPath: imagePath) == image, "closing leaves the image")
                }
                let removed = try await client.call(.delete, "/api/v1/images/shared-1", token: admin)
                #expect(removed.status == .noContent)
                #expect(!FileManager.default.fileExists(atPath: imagePath))
            }
        }
    }

    @Test("pull registers a remote image and downloads it in the background; the listing follows")
    func pullDownloads() async throws {
        let data = ImageServer.randomBytes(512 * 1024)
        let sha = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        try await ImageServer.run(serving: data) { server, url in
            try await APIFixture.run { client, fixture in
                let admin = fixture.adminToken
                let pull = try await client.call(
                    .post, "/api/v1/images/pull", token: admin, body: #"{"version":"pulled-1","url":"\#(url)","sha256":"\#(sha)","format":"raw"}"#)
                #expect(pull.status == .accepted)
                var state = ""
                for _ in 0..<400 where state != "available" {
                    state = try await client.call(.get, "/api/v1/images/pulled-1", token: admin)["state"] as? String ?? ""
                    if state != "available" { try await Task.sleep(for: .milliseconds(25)) }
                }
                #expect(state == "available")
                #expect(server.served.fullRequests == 1)
                let list = try await client.call(.get, "/api/v1/images", token: admin)
                let versions = (list["images"] as? [[String: Any]])?.compactMap { $0["version"] as? String }
                #expect(versions == ["appliance", "pulled-1"])
                let info = try await client.call(.get, "/api/v1")
                #expect(info["imageVersions"] as? [String] == ["appliance", "pulled-1"])
                let again = try await client.call(
                    .post, "/api/v1/images/pull", token: admin, body: #"{"version":"pulled-1","url":"\#(url)","sha256":"\#(sha)"}"#)
                #expect(again.status == .conflict)
            }
        }
    }

    @Test("image routes refuse bad input with 4xx naming the problem, and change nothing")
    func badInput() async throws {
        try await APIFixture.run { client, fixture in
            let admin = fixture.adminToken
            let sha = String(repeating: "0", count: 64)
            let cases: [(String, String, String, HTTPResponse.Status, String)] = [
                ("/api/v1/images/pull", #"{"version":"x1","url":"ftp://h/x","sha256":"\#(sha)"}"#, "'url'", .badRequest, "invalid_argument"),
                ("/api/v1/images/pull", #"{"version":"x1","url":"http://h/x","sha256":"xyz"}"#, "'sha256'", .badRequest, "invalid_argument"),
                ("/api/v1/images/pull", #"{"version":"a b","url":"http://h/x","sha256":"\#(sha)"}"#, "'version'", .badRequest, "invalid_argument"),
                ("/api/v1/images/pull", #"{"version":"x1","url":"http://h/x","sha256":"\#(sha)","format":"vmdk"}"#, "'format'", .badRequest, "invalid_argument"),
                ("/api/v1/images/pull", #"{"version":"x1","url":"http://h/x","sha256":"\#(sha)","extra":1}"#, "'extra'", .badRequest, "invalid_argument"),
                ("/api/v1/images", #"{"version":"x1","path":"/nonexistent/disk.qcow2"}"#, "'path'", .notFound, "not_found"),
                ("/api/v1/images", #"{"version":"x1","path":"relative/disk.qcow2"}"#, "'path'", .badRequest, "invalid_argument"),
                ("/api/v1/images", #"{"version":"x1","path":"/dev/zero"}"#, "regular file", .badRequest, "invalid_argument"),
                ("/api/v1/images/pull", #"{"version":"x1","url":"http://h/x?q=1","sha256":"\#(sha)"}"#, "'url'", .badRequest, "invalid_argument"),
            ]
            for (path, body, needle, status, code) in cases {
                let reply = try await client.call(.post, path, token: admin, body: body)
                #expect(reply.status == status, "\(body)")
                #expect(reply.errorCode == code, "\(body)")
                #expect((reply.error?["message"] as? String)?.contains(needle) == true, "\(body): \(reply.json)")
            }
            // Session tokens are not enough to manage images.
            let session = try await client.newSession()
            let notAdmin = try await client.call(.get, "/api/v1/images", token: session.token)
            #expect(notAdmin.status == .forbidden)
            let list = try await client.call(.get, "/api/v1/images", token: admin)
            #expect((list["images"] as? [[String: Any]])?.count == 1)
            // Opening an unknown version is refused before the session changes.
            let open = try await client.call(
                .post, "/api/v1/sessions/\(session.id)/open", token: session.token, body: #"{"version":"nope-1"}"#)
            #expect(open.status == .notFound)
            let shown = try await client.call(.get, "/api/v1/sessions/\(session.id)", token: session.token)
            #expect(shown["state"] as? String == "closed")
            let appliance = try await client.call(.delete, "/api/v1/images/appliance", token: admin)
            #expect(appliance.status == .forbidden)
        }
    }
}
