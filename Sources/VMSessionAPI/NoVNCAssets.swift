import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import VMSessionCore

/// noVNC, the VNC viewer that `vmsession.js` and the daemon's page put on screen, served by the daemon
/// from Debian's `novnc` package (`/usr/share/novnc`) at `/lib/novnc/…`: no build step and no third-party
/// host. Only its library (`core/`, `vendor/`: ES modules) is served, read into memory at the first request
/// for it (an idle daemon holds none of it), so a request is a dictionary look-up (nothing a URL says can
/// reach another file). Public code like `vmsession.js`: any origin may load it (see ``OriginGuard``).
struct NoVNCAssets: Sendable {
    static let prefix = "/lib/novnc/"
    /// Where Debian installs noVNC; `VMSESSIOND_NOVNC_DIR` overrides it.
    static var defaultDirectory: String { ProcessInfo.processInfo.environment["VMSESSIOND_NOVNC_DIR"] ?? "/usr/share/novnc" }
    /// The largest file read (noVNC's largest module is about 100 KB).
    static let maximumFile = 1 << 20

    let files: LoadedOnce<[String: WebController.Asset]>
    let directory: String

    init(directory: String = NoVNCAssets.defaultDirectory) {
        self.directory = directory
        files = LoadedOnce { Self.read(directory: directory) }
    }

    /// Every module of the library, by its path under `directory`.
    static func read(directory: String) -> [String: WebController.Asset] {
        var files: [String: WebController.Asset] = [:]
        let manager = FileManager.default
        for top in ["core", "vendor"] {
            guard let enumerator = manager.enumerator(atPath: "\(directory)/\(top)") else { continue }
            while let relative = enumerator.nextObject() as? String {
                let path = "\(top)/\(relative)"
                guard path.hasSuffix(".js"), let data = manager.contents(atPath: "\(directory)/\(path)"),
                    data.count <= Self.maximumFile
                else { continue }
                files[path] = WebController.Asset(
                    body: ByteBuffer(bytes: data), contentType: "text/javascript; charset=utf-8", isPublic: true)
            }
        }
        return files
    }

    func addRoutes(to router: Router<APIRequestContext>) {
        router.get("/lib/novnc/**") { _, context -> Response in
            let path = context.parameters.getCatchAll().joined(separator: "/")
            let loaded = await files.value()
            guard let asset = loaded[path] else {
                if loaded.isEmpty {
                    throw VMSessionError(.notFound, "noVNC is not installed (expected in \(directory); Debian package 'novnc').")
                }
                throw VMSessionError(.notFound, "noVNC has no file '\(path)'.")
            }
            return WebController.response(asset)
        }
    }
}
