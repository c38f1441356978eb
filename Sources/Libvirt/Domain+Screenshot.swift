import CLibvirt
import Foundation

extension Domain {
    /// An image of the running domain's screen: libvirt asks QEMU for it and streams it back (PPM from QEMU,
    /// PNG from the test driver). Blocking; at most `limit` bytes are read, a larger image is an error.
    public func screenshot(screen: UInt32 = 0, limit: Int = 64 << 20) throws(LibvirtError) -> (mimeType: String, data: [UInt8]) {
        guard let connection = virDomainGetConnect(pointer) else { throw LibvirtError.last("virDomainGetConnect") }
        guard let stream = virStreamNew(connection, 0) else { throw LibvirtError.last("virStreamNew") }
        defer { virStreamFree(stream) }
        guard let type = virDomainScreenshot(pointer, stream, screen, 0) else {
            throw LibvirtError.last("virDomainScreenshot")
        }
        let mimeType = String(cString: type)
        free(type)
        var data: [UInt8] = []
        var chunk = [CChar](repeating: 0, count: 64 << 10)
        while true {
            let count = chunk.withUnsafeMutableBufferPointer { virStreamRecv(stream, $0.baseAddress, $0.count) }
            if count == 0 { break }
            guard count > 0 else {
                let error = LibvirtError.last("virStreamRecv")
                virStreamAbort(stream)
                throw error
            }
            guard data.count + Int(count) <= limit else {
                virStreamAbort(stream)
                throw LibvirtError(code: -1, domain: 0, message: "the screenshot is larger than \(limit) bytes", operation: "virDomainScreenshot")
            }
            chunk.withUnsafeBufferPointer { buffer in
                buffer.prefix(Int(count)).withMemoryRebound(to: UInt8.self) { data.append(contentsOf: $0) }
            }
        }
        guard virStreamFinish(stream) == 0 else { throw LibvirtError.last("virStreamFinish") }
        return (mimeType, data)
    }
}
