import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import VMSessionCore

/// The static files the daemon serves from its resource bundle (`Sources/VMSessionAPI/Web`): the page
/// library `vmsession.js` and the daemon's own page at `/`. They exist so that a page needs nothing but
/// the daemon, with no build step and no third-party host.
struct WebController {
    /// One file as served: its bytes and its type.
    /// Where the libraries the daemon serves from Debian's packages live (noVNC, xterm.js): public code.
    static let libraryPrefix = "/lib/"

    struct Asset: Sendable {
        let body: ByteBuffer
        let contentType: String
        /// Whether any web origin may load it (see ``OriginGuard``): public library code, nothing else.
        let isPublic: Bool
    }

    /// URL path → (file in `Web/`, type, public). `vmsession.js` is public code that any page must be able to
    /// load before the user approved its origin (a classic `<script src>` sends no Origin and is not subject
    /// to CORS anyway; `type="module"` is, hence `Access-Control-Allow-Origin: *` on it). The page and its
    /// script are for the daemon's own origin only.
    static let routes: [(path: String, file: String, type: String, isPublic: Bool)] = [
        ("/", "index.html", "text/html; charset=utf-8", false),
        ("/page.js", "page.js", "text/javascript; charset=utf-8", false),
        ("/vmsession.js", "vmsession.js", "text/javascript; charset=utf-8", true),
    ]

    /// The paths any origin may GET without being approved.
    static let publicPaths: Set<String> = Set(routes.filter(\.isPublic).map(\.path))

    /// The scripts the daemon's page may run: the daemon's own files, by exact path (noVNC's modules by their
    /// directory). Not `'self'`: that would include every guest page and script behind the proxy
    /// (`/api/v1/sessions/{id}/guest/…`), which share the daemon's origin.
    static let pageScripts = ["/vmsession.js", "/page.js", NoVNCAssets.prefix + "core/", NoVNCAssets.prefix + "vendor/", "/lib/xterm/xterm.js"]

    /// The page may only run the daemon's own scripts (``pageScripts``, also as workers) and talk to its own
    /// origin, may not be framed (an Approve button in a frame could be clicked by a page the user did not
    /// mean to trust), frames nothing and submits no form anywhere. `origin` is `http://` and the request's
    /// Host, which the Host guard already held to the loopback.
    static func pagePolicy(origin: String) -> String {
        let scripts = pageScripts.map { origin + $0 }.joined(separator: " ")
        return "default-src 'self'; script-src \(scripts); worker-src \(scripts); style-src 'unsafe-inline' \(origin)/lib/xterm/xterm.css; "
            + "img-src 'self' data: blob:; object-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    }

    let assets: [String: Asset]

    /// Reads every file once; a file missing from the bundle is answered with a JSON 404 rather than a crash.
    init(bundle: Bundle = .module) {
        var assets: [String: Asset] = [:]
        for route in Self.routes {
            let name = route.file as NSString
            guard
                let url = bundle.url(forResource: name.deletingPathExtension, withExtension: name.pathExtension, subdirectory: "Web"),
                let data = try? Data(contentsOf: url)
            else { continue }
            assets[route.path] = Asset(body: ByteBuffer(bytes: data), contentType: route.type, isPublic: route.isPublic)
        }
        self.assets = assets
    }

    func addRoutes(to router: Router<APIRequestContext>) {
        for route in Self.routes {
            let asset = assets[route.path]
            let path = route.path
            router.get(RouterPath(path)) { request, _ in
                guard let asset else { throw VMSessionError(.notFound, "\(path) is missing from this installation of vmsessiond.") }
                if path == "/", let moved = Self.namedAddress(authority: request.head.authority) {
                    return Response(status: .permanentRedirect, headers: [.location: moved, .cacheControl: "no-store"])
                }
                return Self.response(asset, authority: request.head.authority)
            }
        }
    }

    /// The asset as served. The daemon's own page and script also get `Cross-Origin-Opener-Policy:
    /// same-origin` (a page that opened the daemon's page keeps no handle on its tab, so it cannot steer it
    /// to guest content later) and `Referrer-Policy: no-referrer` (nothing of its URL leaves with a request).
    /// The page at `localhost` when it was asked for at the IPv6 loopback (`[::1]:PORT`): Chromium takes no
    /// IPv6 literal in a CSP source, so the page's exact-path script list cannot name `[::1]` (its scripts
    /// would all be refused), and `'self'` would let guest pages in. `localhost` reaches the same daemon
    /// (the browser tries `::1` too). Nil for any other address.
    static func namedAddress(authority: String?) -> String? {
        guard let authority, authority.hasPrefix("["), let close = authority.firstIndex(of: "]") else { return nil }
        return "http://localhost" + authority[authority.index(after: close)...] + "/"
    }

    static let referrerPolicy = HTTPField.Name("Referrer-Policy")
    static let crossOriginOpenerPolicy = HTTPField.Name("Cross-Origin-Opener-Policy")

    static func response(_ asset: Asset, authority: String? = nil) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = asset.contentType
        // Revalidated on each load, so a page never runs a library older than the daemon it talks to.
        headers[.cacheControl] = "no-cache"
        headers[.xContentTypeOptions] = "nosniff"
        if let name = referrerPolicy { headers[name] = "no-referrer" }
        if asset.isPublic {
            headers[.accessControlAllowOrigin] = "*"
        } else {
            headers[.contentSecurityPolicy] = pagePolicy(origin: "http://" + (authority ?? "127.0.0.1"))
            if let name = crossOriginOpenerPolicy { headers[name] = "same-origin" }
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: asset.body))
    }
}
