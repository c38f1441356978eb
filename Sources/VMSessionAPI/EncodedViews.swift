import Foundation
import NIOCore
import Synchronization
import VMSessionClient
import VMSessionCore
import VMSessionDaemon

/// The JSON of the read routes, encoded once per change and handed to every request after it.
///
/// Why it exists: encoding a view (JSONEncoder, ISO 8601 dates) was most of what a `GET` of a session, of the
/// list or of `/api/v1` cost. Each entry remembers the values it was encoded from; a request whose values
/// are the same (compared, which is far cheaper than encoding) gets the same bytes, shared (a `ByteBuffer`
/// is copy-on-write, so every response sends one storage). A change makes the next request encode once and
/// replace the entry. The lock guards only the table: encoding happens outside it, and nothing is awaited
/// under it.
final class EncodedViews: Sendable {
    private struct SessionEntry {
        let session: Session
        let apiAvailable: Bool
        let host: SessionHost?
        let body: ByteBuffer
    }

    private struct State {
        var sessions: [SessionID: SessionEntry] = [:]
        var list: (generation: UInt64, body: ByteBuffer)?
        var info: (key: DaemonInfoKey, body: ByteBuffer)?
    }

    /// What `GET /api/v1` shows that can change while the daemon runs.
    struct DaemonInfoKey: Equatable {
        let imageVersions: [String]
        let idleSource: DaemonStatus.IdleSourceStatus?
    }

    private let state = Mutex(State())
    /// How many encodes happened (not requests): what the tests check "once per change" against.
    private let encodes = Atomic<Int>(0)

    var encodeCount: Int { encodes.load(ordering: .relaxed) }

    /// A session's view (as ``SessionView`` shows it without live figures).
    func session(_ session: Session, apiAvailable: Bool, address: DaemonAddress, host: SessionHost? = nil) -> ByteBuffer {
        if let entry = state.withLock({ $0.sessions[session.id] }), entry.apiAvailable == apiAvailable, entry.session == session,
            entry.host == host
        {
            return entry.body
        }
        let body = encode(SessionView(session, address: address, apiAvailable: apiAvailable, host: host))
        // Two requests racing over a change may store in either order: an older entry only costs the next
        // request one encode, since entries are compared with the values before they are used.
        state.withLock { $0.sessions[session.id] = SessionEntry(session: session, apiAvailable: apiAvailable, host: host, body: body) }
        return body
    }

    /// The list of every session, for `generation` of the read model.
    func list<View: Encodable>(generation: UInt64, _ make: () -> (View, Set<SessionID>)) -> ByteBuffer {
        if let list = state.withLock({ $0.list }), list.generation == generation { return list.body }
        let (view, present) = make()
        let body = encode(view)
        state.withLock { state in
            if (state.list?.generation ?? 0) <= generation { state.list = (generation, body) }
            // Sessions that are gone no longer need their entries.
            state.sessions = state.sessions.filter { present.contains($0.key) }
        }
        return body
    }

    /// `GET /api/v1`'s answer for `key`.
    func daemonInfo<Info: Encodable>(_ key: DaemonInfoKey, _ make: () -> Info) -> ByteBuffer {
        if let info = state.withLock({ $0.info }), info.key == key { return info.body }
        let body = encode(make())
        state.withLock { $0.info = (key, body) }
        return body
    }

    private func encode(_ value: some Encodable) -> ByteBuffer {
        encodes.add(1, ordering: .relaxed)
        return JSONResponse.encode(value)
    }
}
