import CLibvirt

/// A failure reported by libvirt, carrying libvirt's own error code and message so that callers can
/// tell "no such domain" from "operation invalid" without parsing text.
public struct LibvirtError: Error, CustomStringConvertible, Sendable {
    /// libvirt's `virErrorNumber` (e.g. `VIR_ERR_NO_DOMAIN`).
    public let code: Int32
    /// libvirt's `virErrorDomain`: which part of libvirt raised it.
    public let domain: Int32
    /// libvirt's message, as it would print it.
    public let message: String
    /// The libvirt call that failed.
    public let operation: String

    public var description: String { "\(operation): \(message) (libvirt error \(code))" }

    /// Whether the error says that the domain does not exist.
    public var isNoDomain: Bool { code == Int32(VIR_ERR_NO_DOMAIN.rawValue) }
    /// Whether the error says that the snapshot does not exist.
    public var isNoSnapshot: Bool { code == Int32(VIR_ERR_NO_DOMAIN_SNAPSHOT.rawValue) }
    /// Whether the error says the operation is not supported by this driver.
    public var isUnsupported: Bool {
        code == Int32(VIR_ERR_NO_SUPPORT.rawValue) || code == Int32(VIR_ERR_ARGUMENT_UNSUPPORTED.rawValue)
            || code == Int32(VIR_ERR_OPERATION_UNSUPPORTED.rawValue)
    }
    /// Whether the domain was not in a state that allows the operation (e.g. already running).
    public var isInvalidOperation: Bool { code == Int32(VIR_ERR_OPERATION_INVALID.rawValue) }

    /// Captures the calling thread's last libvirt error. libvirt keeps it thread-locally, so this must be
    /// called on the thread that made the failing call, right after it.
    ///
    /// `operation` is evaluated only after the error is read: naming the object (`virDomainGetName`,
    /// `virStoragePoolGetName`, …) is itself a libvirt call, and every public libvirt call starts by clearing
    /// the thread's last error, so an operation string built first left "unknown libvirt error" behind.
    static func last(_ operation: @autoclosure () -> String) -> LibvirtError {
        guard let error = virGetLastError() else {
            return LibvirtError(code: -1, domain: 0, message: "unknown libvirt error", operation: operation())
        }
        let (code, domain) = (error.pointee.code, error.pointee.domain)
        let message = error.pointee.message.map { String(cString: $0) } ?? "unknown libvirt error"
        return LibvirtError(code: code, domain: domain, message: message, operation: operation())
    }
}
