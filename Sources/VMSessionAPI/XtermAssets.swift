import Foundation
import Hummingbird
import NIOCore
import VMSessionCore

/// xterm.js, the terminal that `vmsession.js` and the daemon's page show a VM's serial console in, served by
/// the daemon at `/lib/xterm/xterm.js` and `/lib/xterm/xterm.css` from Debian's packages: no build step and
/// no third-party host. Public library code, like noVNC (see ``OriginGuard``); read (and bundled) once, at
/// the first request for it: an idle daemon holds none of it.
///
/// Debian 12's `libjs-xterm` (3.8.1) ships an `xterm.js` that holds only the entry module's re-export (it
/// calls `require`, which a browser does not have), so where that file is not a real bundle the daemon
/// bundles `node-xterm`'s CommonJS modules itself (``CommonJSBundle``): each module wrapped in a function,
/// with a `require` that resolves relative paths among them. No bundler is packaged for this, and the
/// modules need nothing more (their only other requires are in their tests, which are left out).
/// The script defines `window.Terminal` with the fit addon applied.
struct XtermAssets: Sendable {
    static let prefix = "/lib/xterm/"
    /// Debian's browser build and its CommonJS modules; `VMSESSIOND_XTERM_DIR` names a directory holding
    /// either `xterm.js` (a working bundle) or node-xterm's `lib/`.
    static var candidates: [String] {
        if let directory = ProcessInfo.processInfo.environment["VMSESSIOND_XTERM_DIR"] { return [directory] }
        return ["/usr/share/javascript/xterm", "/usr/share/nodejs/xterm/lib"]
    }

    /// The script and style as served.
    struct Files: Sendable {
        let script: WebController.Asset?
        let style: WebController.Asset?
        /// Where it came from, for the error when it is missing.
        let origin: String
    }

    let files: LoadedOnce<Files>

    init(candidates: [String] = XtermAssets.candidates) {
        files = LoadedOnce { Self.read(candidates: candidates) }
    }

    static func read(candidates: [String]) -> Files {
        var script: ByteBuffer?
        var style: ByteBuffer?
        var origin = "not found in \(candidates.joined(separator: " or ")) (Debian packages 'libjs-xterm' and 'node-xterm')"
        let manager = FileManager.default
        for directory in candidates {
            if style == nil, let css = manager.contents(atPath: directory + "/xterm.css") { style = ByteBuffer(bytes: css) }
            guard script == nil else { continue }
            if let bundle = manager.contents(atPath: directory + "/xterm.js"), Self.isBrowserBundle(bundle) {
                script = ByteBuffer(bytes: bundle)
                origin = directory + "/xterm.js"
            } else if let bundle = CommonJSBundle(directory: directory, entry: "public/Terminal", export: "Terminal",
                                                   addons: ["addons/fit/fit"], global: "Terminal") {
                script = ByteBuffer(string: bundle.text)
                origin = "\(directory) (\(bundle.moduleCount) modules, bundled by the daemon)"
            }
        }
        return Files(
            script: script.map { WebController.Asset(body: $0, contentType: "text/javascript; charset=utf-8", isPublic: true) },
            style: style.map { WebController.Asset(body: $0, contentType: "text/css; charset=utf-8", isPublic: true) },
            origin: origin)
    }

    /// A browser build defines the terminal itself; Debian 12's stub is a few hundred bytes that `require` it.
    static func isBrowserBundle(_ data: Data) -> Bool {
        data.count > 64 * 1024
    }

    func addRoutes(to router: Router<APIRequestContext>) {
        router.get("/lib/xterm/xterm.js") { _, _ -> Response in
            let loaded = await files.value()
            guard let script = loaded.script else { throw VMSessionError(.notFound, "xterm.js is \(loaded.origin).") }
            return WebController.response(script)
        }
        router.get("/lib/xterm/xterm.css") { _, _ -> Response in
            let loaded = await files.value()
            guard let style = loaded.style else { throw VMSessionError(.notFound, "xterm.css is \(loaded.origin).") }
            return WebController.response(style)
        }
    }
}

/// CommonJS modules (one directory of them) as one classic script for the browser.
///
/// Each `.js` file (tests and source maps left out) becomes a function of `(module, exports, require)`
/// keyed by its path without `.js`; `require` resolves `./` and `../` against the requiring module's
/// directory at run time. The script evaluates `entry`, applies each addon (`Terminal.applyAddon`) and
/// sets `window[global]` to the entry's `export`.
struct CommonJSBundle: Sendable {
    let text: String
    let moduleCount: Int
    /// The largest module read (xterm's largest is about 80 KB).
    static let maximumModule = 1 << 20

    init?(directory: String, entry: String, export: String, addons: [String] = [], global: String) {
        let manager = FileManager.default
        guard let enumerator = manager.enumerator(atPath: directory) else { return nil }
        var modules: [(name: String, source: String)] = []
        while let relative = enumerator.nextObject() as? String {
            guard relative.hasSuffix(".js"), !relative.hasSuffix(".test.js"),
                let data = manager.contents(atPath: directory + "/" + relative), data.count <= Self.maximumModule,
                let source = String(data: data, encoding: .utf8)
            else { continue }
            modules.append((String(relative.dropLast(3)), source))
        }
        // Addons named by path are read even where the enumeration did not reach them (node-xterm's `addons`
        // is a symbolic link to libjs-xterm's directory, which an enumeration does not follow).
        for addon in addons where !modules.contains(where: { $0.name == addon }) {
            guard let data = manager.contents(atPath: directory + "/" + addon + ".js"), data.count <= Self.maximumModule,
                let source = String(data: data, encoding: .utf8)
            else { return nil }
            modules.append((addon, source))
        }
        guard modules.contains(where: { $0.name == entry }) else { return nil }
        modules.sort { $0.name < $1.name }
        var text = """
            /* Bundled by vmsessiond from the CommonJS modules in \(directory) (see XtermAssets.swift). */
            (function (global) {
              'use strict';
              var sources = {

            """
        for module in modules {
            // Source-map comments would send the browser after files that are not served.
            let body = module.source.split(separator: "\n", omittingEmptySubsequences: false)
                .filter { !$0.hasPrefix("//# sourceMappingURL=") }.joined(separator: "\n")
            text += "\(Self.quoted(module.name)): function (module, exports, require) {\n\(body)\n},\n"
        }
        text += """
              };
              var cache = {};
              function resolve(from, request) {
                var parts = from.split('/');
                parts.pop();
                request.replace(/\\.js$/, '').split('/').forEach(function (part) {
                  if (part === '..') parts.pop(); else if (part !== '.' && part !== '') parts.push(part);
                });
                var name = parts.join('/');
                return (name in sources) ? name : name + '/index';
              }
              function load(name) {
                if (cache[name]) return cache[name].exports;
                if (!(name in sources)) throw new Error('bundle: no module ' + name);
                var module = cache[name] = { exports: {} };
                sources[name].call(module.exports, module, module.exports, function (request) { return load(resolve(name, request)); });
                return module.exports;
              }
              var exported = load(\(Self.quoted(entry)))[\(Self.quoted(export))];
              [\(addons.map(Self.quoted).joined(separator: ", "))].forEach(function (addon) { exported.applyAddon(load(addon)); });
              global[\(Self.quoted(global))] = exported;
            })(window);

            """
        self.text = text
        moduleCount = modules.count
    }

    /// A JavaScript string literal for a module path (letters, digits, `/`, `.`, `_`, `-` as they are).
    static func quoted(_ name: String) -> String {
        var out = "\""
        for scalar in name.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20 || scalar.value > 0x7e: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
