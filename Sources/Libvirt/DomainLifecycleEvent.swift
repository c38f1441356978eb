import CLibvirt

/// A lifecycle event as libvirt reports it: which domain, which event (`VIR_DOMAIN_EVENT_*`) and its
/// detail. Kept raw on purpose: what it means for a session is decided above this module.
public struct DomainLifecycleEvent: Sendable, CustomStringConvertible {
    public let domainName: String
    public let event: Int32
    public let detail: Int32

    public var description: String { "\(domainName): \(eventName)/\(detail)" }

    /// libvirt's name for the event kind, for logs.
    public var eventName: String {
        switch UInt32(bitPattern: event) {
        case VIR_DOMAIN_EVENT_DEFINED.rawValue: "defined"
        case VIR_DOMAIN_EVENT_UNDEFINED.rawValue: "undefined"
        case VIR_DOMAIN_EVENT_STARTED.rawValue: "started"
        case VIR_DOMAIN_EVENT_SUSPENDED.rawValue: "suspended"
        case VIR_DOMAIN_EVENT_RESUMED.rawValue: "resumed"
        case VIR_DOMAIN_EVENT_STOPPED.rawValue: "stopped"
        case VIR_DOMAIN_EVENT_SHUTDOWN.rawValue: "shutdown"
        case VIR_DOMAIN_EVENT_PMSUSPENDED.rawValue: "pmsuspended"
        case VIR_DOMAIN_EVENT_CRASHED.rawValue: "crashed"
        default: "event-\(event)"
        }
    }
}
