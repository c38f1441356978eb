import CLibvirt
import Synchronization

/// Why libvirt closed a connection (`virConnectCloseReason`): what a daemon with many hosts tells apart to
/// say why a host became unreachable.
public enum ConnectionCloseReason: Equatable, Sendable, CustomStringConvertible {
    /// An I/O error on the transport.
    case error
    /// The far end closed the transport: its libvirt daemon (or the SSH tunnel to it) went away.
    case endOfFile
    /// The far end stopped answering keepalive probes (a hung host, a cut or blocked network).
    case keepalive
    /// This side closed it.
    case client
    /// A reason this libvirt version added after the ones above.
    case other(Int32)

    init(_ reason: Int32) {
        switch UInt32(bitPattern: reason) {
        case VIR_CONNECT_CLOSE_REASON_ERROR.rawValue: self = .error
        case VIR_CONNECT_CLOSE_REASON_EOF.rawValue: self = .endOfFile
        case VIR_CONNECT_CLOSE_REASON_KEEPALIVE.rawValue: self = .keepalive
        case VIR_CONNECT_CLOSE_REASON_CLIENT.rawValue: self = .client
        default: self = .other(reason)
        }
    }

    public var description: String {
        switch self {
        case .error: "transport error"
        case .endOfFile: "the far end closed the connection"
        case .keepalive: "the far end stopped answering keepalive probes"
        case .client: "closed by this side"
        case .other(let code): "closed (libvirt reason \(code))"
        }
    }
}

/// A connection's health: keepalive probes and the close callback, so that a connection to a remote host
/// (`qemu+ssh://`, `qemu+tls://`) that dies or hangs is noticed within seconds rather than at the next call
/// that blocks on it. Both need the event loop running (``EventLoop/shared``, started by ``Connection/init(uri:)``).
extension Connection {
    /// Makes libvirt send a keepalive probe after `interval` seconds of silence and close the connection
    /// (reason ``ConnectionCloseReason/keepalive``) when `count` probes in a row get no answer: a hung host is
    /// noticed after about `interval × (count + 1)` seconds. Returns false where the driver has no keepalive
    /// (local drivers such as the embedded one, whose connection cannot hang).
    @discardableResult
    public func setKeepAlive(interval: Int32, count: UInt32) throws(LibvirtError) -> Bool {
        switch virConnectSetKeepAlive(pointer, interval, count) {
        case 0: return true
        case 1: return false  // the far end does not speak keepalive
        default:
            let error = LibvirtError.last("virConnectSetKeepAlive")
            if error.isUnsupported { return false }
            throw error
        }
    }

    /// Whether the connection is still usable (libvirt's own view: false once it was closed underneath).
    public var isAlive: Bool { virConnectIsAlive(pointer) == 1 }

    /// Registers `handler` to be told once when libvirt closes this connection underneath (the far end went
    /// away, keepalive gave up, a transport error). One handler per connection; it runs on the event loop
    /// thread, so it must be short and must not call back into this connection. It is dropped with the
    /// connection. Local drivers (embedded, test) accept it and never call it: nothing can close them underneath.
    public func onClose(_ handler: @escaping @Sendable (ConnectionCloseReason) -> Void) throws(LibvirtError) {
        let box = CloseHandlerBox(handler)
        try closeHandler.withLock { (current: inout CloseHandlerBox?) throws(LibvirtError) in
            guard current == nil else {
                throw LibvirtError(
                    code: Int32(VIR_ERR_OPERATION_INVALID.rawValue), domain: 0,
                    message: "a close handler is already registered on this connection", operation: "onClose")
            }
            // No free callback: the connection owns the box, since local drivers never call one.
            guard virConnectRegisterCloseCallback(pointer, Self.closeCallback, Unmanaged.passUnretained(box).toOpaque(), nil) == 0 else {
                throw LibvirtError.last("virConnectRegisterCloseCallback")
            }
            current = box
        }
    }

    /// Removes the handler ``onClose(_:)`` registered; called before the connection is closed, since libvirt's
    /// registration holds a reference to the connection. libvirt calls the handler under the lock that
    /// unregistering takes, so once this returns no call is running and the box can go.
    func removeCloseHandler() {
        let box = closeHandler.withLock { (current: inout CloseHandlerBox?) -> CloseHandlerBox? in
            defer { current = nil }
            return current
        }
        guard let box else { return }
        _ = virConnectUnregisterCloseCallback(pointer, Self.closeCallback)
        withExtendedLifetime(box) {}
    }

    /// The one C function libvirt calls; unregistering names it again, so it must be the same pointer.
    static var closeCallback: virConnectCloseFunc {
        { _, reason, opaque in
            guard let opaque else { return }
            Unmanaged<CloseHandlerBox>.fromOpaque(opaque).takeUnretainedValue().handler(ConnectionCloseReason(reason))
        }
    }
}

/// The Swift handler behind the C close callback's opaque pointer.
final class CloseHandlerBox: Sendable {
    let handler: @Sendable (ConnectionCloseReason) -> Void
    init(_ handler: @escaping @Sendable (ConnectionCloseReason) -> Void) { self.handler = handler }
}
