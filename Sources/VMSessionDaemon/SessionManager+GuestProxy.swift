import AsyncHTTPClient
import Foundation
import Synchronization
import VMSessionCore
import VMSessionHypervisor

/// Where the daemon itself is reached, once its server listens: the base of the URLs it hands out for a
/// guest's API (`apiURL`), which are the daemon's proxy routes, never where the daemon itself reaches the guest.
///
/// It exists because the port is known only after the server bound it (`--listen 127.0.0.1:0` in tests),
/// while the session manager announces `apiAvailable` with the URL in it.
public final class DaemonAddress: Sendable {
    private let base = Mutex<String?>(nil)

    public init() {}

    /// Records the address the server listens on (`host` as given to `--listen`; an IPv6 one is bracketed).
    public func listening(host: String, port: Int) {
        let shown = host.contains(":") ? "[\(host)]" : host
        // A wildcard listener is reached on the loopback by local pages.
        let reachable = ["0.0.0.0", "[::]"].contains(shown) ? "127.0.0.1" : shown
        base.withLock { $0 = "http://\(reachable):\(port)" }
    }

    /// The proxied URL of a session's guest API; a path alone until the server listens.
    public func guestAPIURL(for id: SessionID) -> String {
        (base.withLock { $0 } ?? "") + "/api/v1/sessions/\(id)/guest"
    }
}

/// Where the daemon finds a session's guest API: the one place that knows how a guest is reached, for the
/// proxy and the probe alike (``url(pathAndQuery:)``).
public struct GuestAPIRoute: Sendable, Hashable {
    /// A Unix socket only the daemon's user can open (or a stand-in's loopback port in tests).
    public let address: GuestAPIAddress

    public init(address: GuestAPIAddress) { self.address = address }

    /// The URL of `pathAndQuery` (starting with `/`) on the guest, for ``client``.
    public func url(pathAndQuery: String) -> String { address.url(pathAndQuery) }

    /// The one HTTP client for every guest (proxy and probes): it follows no redirect (a guest's redirect is
    /// the page's business, and a probe counts any answer), leaves bodies compressed as they came, and gives
    /// a guest 5 s to accept the connection; each caller bounds the whole exchange itself.
    public static let client = HTTPClient(
        eventLoopGroup: HTTPClient.defaultEventLoopGroup,
        configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5)), decompression: .disabled))
}

extension SessionManager {
    /// The guest forward of session `id` for the proxy: `invalid_state` (409) while its VM does not run,
    /// `unavailable` (503, retry) while it runs but its API has not answered the daemon's probe yet.
    /// The caller has authorized the request already.
    public func guestAPIRoute(_ id: SessionID) throws(VMSessionError) -> GuestAPIRoute {
        guard let entry = sessions[id] else { throw VMSessionError(.notFound, "There is no session \(id).") }
        guard entry.session.state == .running, entry.session.egress != nil, let address = hypervisor.guestAPIAddress(of: id) else {
            // A VM defined without a network because its host gives none (a remote host over TLS, or without passt).
            if entry.session.egress == nil, let reason = hypervisor.guestNetworkOffer(for: id).reason {
                throw VMSessionError(.notSupported, reason)
            }
            throw VMSessionError(
                .invalidState, "The session's VM is \(entry.session.state.rawValue), not running: its guest API cannot be reached.")
        }
        guard isGuestAPIAvailable(id) else {
            throw VMSessionError(
                .unavailable, "The guest's API does not answer yet; wait for the apiAvailable event.", retryAfterSeconds: 2)
        }
        return GuestAPIRoute(address: address)
    }
}
