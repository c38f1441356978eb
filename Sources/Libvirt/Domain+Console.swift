import CLibvirt
import Foundation

extension Domain {
    /// Opens the domain's serial console (its first `pty` serial port) as a non-blocking stream over the
    /// connection (`virDomainOpenConsole`): how a console is reached on a remote host, where the pty is the host's.
    /// The console is taken over from any other client (`VIR_DOMAIN_CONSOLE_FORCE`); it ends when QEMU exits.
    public func openConsole() throws(LibvirtError) -> ConsoleStream {
        guard let connection = virDomainGetConnect(pointer) else { throw LibvirtError.last("virDomainGetConnect") }
        guard let stream = virStreamNew(connection, UInt32(VIR_STREAM_NONBLOCK.rawValue)) else { throw LibvirtError.last("virStreamNew") }
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

/// A domain's console as a non-blocking byte stream, both ways.
///
/// Why non-blocking: a blocking read of a remote stream is an RPC call that waits for as long as the guest is
/// silent, and a remote connection must have one call at a time (see `HostConnection`). Here the guest's output
/// is read by ``receiveAvailable(into:)``, which only takes what libvirt's client has already received (it never
/// waits nor does I/O: `virNetClientStreamRecvPacket` answers -2 at once when nothing is buffered), from the
/// handler ``onEvents(_:)`` runs on libvirt's event loop when bytes arrived. ``send(_:)``, ``abort()`` and opening
/// the stream are calls: the caller runs them one at a time with the connection's other calls.
public final class ConsoleStream: @unchecked Sendable {
    let pointer: virStreamPtr

    init(_ pointer: virStreamPtr) { self.pointer = pointer }

    deinit { virStreamFree(pointer) }

    /// What ``receiveAvailable(into:)`` found.
    public enum Received: Equatable, Sendable {
        /// This many bytes were put in the buffer.
        case bytes(Int)
        /// Nothing is buffered now (a later event says when there is).
        case nothingYet
        /// The console ended (QEMU exited).
        case ended
    }

    /// Takes bytes libvirt already received, without waiting and without a call on the connection.
    public func receiveAvailable(into buffer: inout [UInt8]) throws(LibvirtError) -> Received {
        let count = buffer.withUnsafeMutableBytes { raw in
            virStreamRecv(pointer, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count)
        }
        switch count {
        case -2: return .nothingYet
        case 0: return .ended
        case ..<0: throw LibvirtError.last("virStreamRecv")
        default: return .bytes(Int(count))
        }
    }

    /// Sends what it can of `bytes` to the guest's serial port (a call on the connection); returns how many
    /// bytes went, 0 if the stream cannot take any now.
    public func send(_ bytes: ArraySlice<UInt8>) throws(LibvirtError) -> Int {
        let sent = bytes.withUnsafeBytes { raw in
            raw.baseAddress.map { virStreamSend(pointer, $0.assumingMemoryBound(to: CChar.self), raw.count) } ?? 0
        }
        if sent == -2 { return 0 }
        guard sent >= 0 else { throw LibvirtError.last("virStreamSend") }
        return Int(sent)
    }

    /// Calls `handler` on libvirt's event loop thread whenever the stream has bytes to read, ended or failed, until
    /// ``removeEventHandler()``. The handler must be short and make no call on the connection (reading with
    /// ``receiveAvailable(into:)`` is not one). One handler per stream.
    public func onEvents(_ handler: @escaping @Sendable () -> Void) throws(LibvirtError) {
        let box = Unmanaged.passRetained(StreamHandlerBox(handler)).toOpaque()
        let events = Int32(VIR_STREAM_EVENT_READABLE.rawValue | VIR_STREAM_EVENT_ERROR.rawValue | VIR_STREAM_EVENT_HANGUP.rawValue)
        let added = virStreamEventAddCallback(
            pointer, events,
            { _, _, opaque in
                guard let opaque else { return }
                Unmanaged<StreamHandlerBox>.fromOpaque(opaque).takeUnretainedValue().handler()
            },
            box,
            { opaque in
                // libvirt frees it once no call of the handler runs (also when it is removed from within one).
                guard let opaque else { return }
                Unmanaged<StreamHandlerBox>.fromOpaque(opaque).release()
            })
        guard added == 0 else {
            Unmanaged<StreamHandlerBox>.fromOpaque(box).release()
            throw LibvirtError.last("virStreamEventAddCallback")
        }
    }

    /// Stops calling the handler of ``onEvents(_:)`` (no call on the connection; allowed from within the handler).
    public func removeEventHandler() { _ = virStreamEventRemoveCallback(pointer) }

    /// Ends the stream from this side (a call on the connection); harmless on an ended stream.
    public func abort() { _ = virStreamAbort(pointer) }
}

private final class StreamHandlerBox: Sendable {
    let handler: @Sendable () -> Void
    init(_ handler: @escaping @Sendable () -> Void) { self.handler = handler }
}

extension StorageVolume {
    /// The volume's XML description (its format, and for an overlay its `<backingStore>`).
    public func xmlDescription() throws(LibvirtError) -> String {
        guard let xml = virStorageVolGetXMLDesc(pointer, 0) else { throw LibvirtError.last("virStorageVolGetXMLDesc(\(name))") }
        defer { free(xml) }
        return String(cString: xml)
    }
}
