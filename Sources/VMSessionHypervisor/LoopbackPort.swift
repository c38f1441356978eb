import Foundation
import VMSessionCore

/// Finds a free TCP port on 127.0.0.1 for a guest's API, by letting the kernel pick one.
public enum LoopbackPort {
    public static func free() throws(VMSessionError) -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw VMSessionError(.ioError, "Cannot open a socket to find a free port.") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                bind(fd, generic, length) == 0 && getsockname(fd, generic, &length) == 0
            }
        }
        guard bound else { throw VMSessionError(.ioError, "Cannot find a free port on 127.0.0.1.") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
