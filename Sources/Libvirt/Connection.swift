import CLibvirt
import Foundation
import Synchronization

/// An open connection to a libvirt driver (`qemu:///embed?root=…`, `qemu:///system`, `test:///default`, …).
///
/// Every method is a blocking call into libvirt; callers on Swift concurrency's cooperative pool should
/// run them elsewhere (see `VMSessionHypervisor`). libvirt connections are safe to share between threads.
public final class Connection: @unchecked Sendable {
    let pointer: virConnectPtr
    public let uri: String
    /// The handler ``onClose(_:)`` registered, owned here (libvirt's local drivers accept a registration but
    /// never release it); removed from libvirt before closing.
    let closeHandler = Mutex<CloseHandlerBox?>(nil)

    /// Opens a read-write connection. The event loop must be running for events (and for the embedded driver).
    public init(uri: String) throws(LibvirtError) {
        try EventLoop.shared.start()
        guard let pointer = virConnectOpen(uri) else { throw LibvirtError.last("virConnectOpen(\(uri))") }
        self.pointer = pointer
        self.uri = uri
    }

    deinit {
        removeCloseHandler()
        virConnectClose(pointer)
    }

    /// The driver's name, e.g. `QEMU` or `TEST`.
    public func driverName() throws(LibvirtError) -> String {
        guard let type = virConnectGetType(pointer) else { throw LibvirtError.last("virConnectGetType") }
        return String(cString: type)
    }

    /// The hypervisor's version as `major.minor.release` (e.g. `7.2.0` for QEMU 7.2), from libvirt's packed number.
    public func hypervisorVersion() throws(LibvirtError) -> String {
        var version: UInt = 0
        guard virConnectGetVersion(pointer, &version) == 0 else { throw LibvirtError.last("virConnectGetVersion") }
        return "\(version / 1_000_000).\(version / 1000 % 1000).\(version % 1000)"
    }

    /// Defines (or redefines) a persistent domain from its XML description.
    public func defineDomain(xml: String) throws(LibvirtError) -> Domain {
        guard let domain = virDomainDefineXML(pointer, xml) else { throw LibvirtError.last("virDomainDefineXML") }
        return Domain(domain)
    }

    /// The domain with this name, or nil if there is none.
    public func domain(named name: String) throws(LibvirtError) -> Domain? {
        if let domain = virDomainLookupByName(pointer, name) { return Domain(domain) }
        let error = LibvirtError.last("virDomainLookupByName(\(name))")
        if error.isNoDomain { return nil }
        throw error
    }

    /// Every domain the driver knows, running or not.
    public func allDomains() throws(LibvirtError) -> [Domain] {
        var list: UnsafeMutablePointer<virDomainPtr?>?
        let count = virConnectListAllDomains(pointer, &list, 0)
        guard count >= 0, let list else { throw LibvirtError.last("virConnectListAllDomains") }
        defer { free(list) }
        return (0..<Int(count)).compactMap { index in list[index].map { Domain($0) } }
    }

    /// Registers `handler` for every domain lifecycle event on this connection and returns a token that
    /// ``removeLifecycleHandler(_:)`` takes. The handler runs on the event loop thread: keep it short.
    public func addLifecycleHandler(
        _ handler: @escaping @Sendable (DomainLifecycleEvent) -> Void
    ) throws(LibvirtError) -> Int32 {
        let box = Unmanaged.passRetained(LifecycleHandlerBox(handler)).toOpaque()
        // The lifecycle event uses libvirt's original callback shape (it returns int).
        let callback: virConnectDomainEventCallback = { _, domain, event, detail, opaque in
            guard let domain, let opaque else { return 0 }
            let box = Unmanaged<LifecycleHandlerBox>.fromOpaque(opaque).takeUnretainedValue()
            guard let name = virDomainGetName(domain) else { return 0 }
            box.handler(DomainLifecycleEvent(domainName: String(cString: name), event: event, detail: detail))
            return 0
        }
        let id = virConnectDomainEventRegisterAny(
            pointer, nil, Int32(VIR_DOMAIN_EVENT_ID_LIFECYCLE.rawValue),
            unsafeBitCast(callback, to: virConnectDomainEventGenericCallback.self),
            box,
            { opaque in
                guard let opaque else { return }
                Unmanaged<LifecycleHandlerBox>.fromOpaque(opaque).release()
            }
        )
        guard id >= 0 else {
            Unmanaged<LifecycleHandlerBox>.fromOpaque(box).release()
            throw LibvirtError.last("virConnectDomainEventRegisterAny")
        }
        return id
    }

    /// Stops delivering events to a handler added by ``addLifecycleHandler(_:)``.
    public func removeLifecycleHandler(_ id: Int32) {
        _ = virConnectDomainEventDeregisterAny(pointer, id)
    }
}

private final class LifecycleHandlerBox: Sendable {
    let handler: @Sendable (DomainLifecycleEvent) -> Void
    init(_ handler: @escaping @Sendable (DomainLifecycleEvent) -> Void) { self.handler = handler }
}
