import CLibvirt
import Foundation

extension Domain {
    /// Opens the domain's serial console (its first `pty` serial port) as a stream over the connection
    /// (`virDomainOpenConsole`): how a console is reached on a remote host, where the pty is the host's. The
    /// console is taken over from any other client (`VIR_DOMAIN_CONSOLE_FORCE`); it ends when QEMU exits.
    public func openConsole() throws(LibvirtError) -> ConsoleStream {
        guard let connection = virDomainGetConnect(pointer) else { throw LibvirtError.last("virDomainGetConnect") }
        guard let stream = virStreamNew(connection, 0) else { throw LibvirtError.last("virStreamNew") }
        guard virDomainOpenConsole(pointer, nil, stream, UInt32(VIR_DOMAIN_CONSOLE_FORCE.rawValue)) == 0 else {
            let error = LibvirtError.last("virDomainOpenConsole(\(name))")
            virStreamFree(stream)
            throw error
        }
        return ConsoleStream(stream)
    }

    /// The domain's current XML description.
    public func xmlDescription() throws(LibvirtError) -> String {
        guard let xml = virDomainGetXMLDesc(pointer, 0) else { throw LibvirtError.last("virDomainGetXMLDesc(\(name))") }
        defer { free(xml) }
        return String(cString: xml)
    }
}

/// A domain's console as a blocking byte stream, both ways. ``receive(into:)`` blocks until the guest writes
/// (run it on a thread of its own); ``send(_:)`` may be called from another thread meanwhile.
public final class ConsoleStream: @unchecked Sendable {
    let pointer: virStreamPtr

    init(_ pointer: virStreamPtr) { self.pointer = pointer }

    deinit { virStreamFree(pointer) }

    /// Waits for the guest's next bytes; returns how many were put in `buffer`, 0 when the console ended.
    public func receive(into buffer: inout [UInt8]) throws(LibvirtError) -> Int {
        let count = buffer.withUnsafeMutableBytes { raw in
            virStreamRecv(pointer, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count)
        }
        guard count >= 0 else { throw LibvirtError.last("virStreamRecv") }
        return Int(count)
    }

    /// Sends `bytes` to the guest's serial port.
    public func send(_ bytes: [UInt8]) throws(LibvirtError) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { raw in
                raw.baseAddress.map { virStreamSend(pointer, $0.assumingMemoryBound(to: CChar.self) + offset, bytes.count - offset) } ?? -1
            }
            guard sent > 0 else { throw LibvirtError.last("virStreamSend") }
            offset += Int(sent)
        }
    }

    /// Ends the stream from this side (a blocked ``receive(into:)`` returns with an error).
    public func abort() { _ = virStreamAbort(pointer) }
}

extension StorageVolume {
    /// The volume's XML description (its format, and for an overlay its `<backingStore>`).
    public func xmlDescription() throws(LibvirtError) -> String {
        guard let xml = virStorageVolGetXMLDesc(pointer, 0) else { throw LibvirtError.last("virStorageVolGetXMLDesc(\(name))") }
        defer { free(xml) }
        return String(cString: xml)
    }
}
