import CLibvirt
import Foundation

/// A libvirt storage pool: where a host keeps volumes (a directory, for the `dir` pools used here).
///
/// Pools and volumes are how files reach a remote host without a shared file system: the daemon makes a volume
/// on the host and streams a local file into it over the libvirt connection itself (``StorageVolume/upload(contentsOf:)``),
/// then names the volume's path on that host in the domain XML. Every method is a blocking libvirt call.
public final class StoragePool: @unchecked Sendable {
    let pointer: virStoragePoolPtr
    let connection: virConnectPtr

    init(_ pointer: virStoragePoolPtr, connection: virConnectPtr) {
        self.pointer = pointer
        self.connection = connection
        virConnectRef(connection)
    }

    deinit {
        virStoragePoolFree(pointer)
        virConnectClose(connection)
    }

    public var name: String { virStoragePoolGetName(pointer).map { String(cString: $0) } ?? "" }

    /// Makes the pool's target (for a `dir` pool: its directory) if it is missing.
    public func build() throws(LibvirtError) {
        guard virStoragePoolBuild(pointer, 0) == 0 else { throw LibvirtError.last("virStoragePoolBuild(\(name))") }
    }

    /// Starts (activates) a defined pool.
    public func start() throws(LibvirtError) {
        guard virStoragePoolCreate(pointer, 0) == 0 else { throw LibvirtError.last("virStoragePoolCreate(\(name))") }
    }

    public var isActive: Bool { virStoragePoolIsActive(pointer) == 1 }

    /// Re-reads the pool's target (volumes made on the host by other means).
    public func refresh() throws(LibvirtError) {
        guard virStoragePoolRefresh(pointer, 0) == 0 else { throw LibvirtError.last("virStoragePoolRefresh(\(name))") }
    }

    /// Stops the pool; its volumes' files stay.
    public func destroy() throws(LibvirtError) {
        guard virStoragePoolDestroy(pointer) == 0 else { throw LibvirtError.last("virStoragePoolDestroy(\(name))") }
    }

    /// Removes the pool's target (for a `dir` pool: its directory, which must be empty); the pool must be stopped.
    public func delete() throws(LibvirtError) {
        guard virStoragePoolDelete(pointer, 0) == 0 else { throw LibvirtError.last("virStoragePoolDelete(\(name))") }
    }

    /// Forgets a stopped pool's definition.
    public func undefine() throws(LibvirtError) {
        guard virStoragePoolUndefine(pointer) == 0 else { throw LibvirtError.last("virStoragePoolUndefine(\(name))") }
    }

    /// Makes a volume from its XML (`<volume><name>…</name><capacity unit='bytes'>…</capacity>…`).
    public func createVolume(xml: String) throws(LibvirtError) -> StorageVolume {
        guard let volume = virStorageVolCreateXML(pointer, xml, 0) else { throw LibvirtError.last("virStorageVolCreateXML") }
        return StorageVolume(volume, connection: connection)
    }

    /// Makes a volume from its XML, filled with a copy of `source` (a volume of the same pool) made on the host
    /// (`virStorageVolCreateXMLFrom`: for a `dir` pool, `qemu-img convert`, which copies what the guest sees of the
    /// source's disk and none of its internal snapshots). Nothing crosses the connection but the call.
    public func createVolume(xml: String, from source: StorageVolume) throws(LibvirtError) -> StorageVolume {
        guard let volume = virStorageVolCreateXMLFrom(pointer, xml, source.pointer, 0) else {
            throw LibvirtError.last("virStorageVolCreateXMLFrom")
        }
        return StorageVolume(volume, connection: connection)
    }

    /// The volume with this name, or nil if there is none.
    public func volume(named name: String) throws(LibvirtError) -> StorageVolume? {
        if let volume = virStorageVolLookupByName(pointer, name) { return StorageVolume(volume, connection: connection) }
        let error = LibvirtError.last("virStorageVolLookupByName(\(name))")
        if error.code == Int32(VIR_ERR_NO_STORAGE_VOL.rawValue) { return nil }
        throw error
    }

    /// Every volume of the (active) pool.
    public func allVolumes() throws(LibvirtError) -> [StorageVolume] {
        var list: UnsafeMutablePointer<virStorageVolPtr?>?
        let count = virStoragePoolListAllVolumes(pointer, &list, 0)
        guard count >= 0, let list else { throw LibvirtError.last("virStoragePoolListAllVolumes(\(name))") }
        defer { free(list) }
        return (0..<Int(count)).compactMap { index in list[index].map { StorageVolume($0, connection: connection) } }
    }
}

/// A volume in a ``StoragePool``: a file on the pool's host that a domain can name by ``path``.
public final class StorageVolume: @unchecked Sendable {
    let pointer: virStorageVolPtr
    let connection: virConnectPtr

    init(_ pointer: virStorageVolPtr, connection: virConnectPtr) {
        self.pointer = pointer
        self.connection = connection
        virConnectRef(connection)
    }

    deinit {
        virStorageVolFree(pointer)
        virConnectClose(connection)
    }

    public var name: String { virStorageVolGetName(pointer).map { String(cString: $0) } ?? "" }

    /// The volume's path on its host: what a domain's XML names (`<kernel>`, `<source file=…>`).
    public func path() throws(LibvirtError) -> String {
        guard let path = virStorageVolGetPath(pointer) else { throw LibvirtError.last("virStorageVolGetPath(\(name))") }
        defer { free(path) }
        return String(cString: path)
    }

    /// The volume's size as its guest sees it (capacity) and what it takes on the host (allocation), in bytes.
    public func info() throws(LibvirtError) -> (capacity: UInt64, allocation: UInt64) {
        var info = virStorageVolInfo()
        guard virStorageVolGetInfo(pointer, &info) == 0 else { throw LibvirtError.last("virStorageVolGetInfo(\(name))") }
        return (UInt64(info.capacity), UInt64(info.allocation))
    }

    /// Replaces the volume's content from the start with the local file at `path`, streamed over the libvirt
    /// connection (no shared file system, no other channel to the host). Returns the bytes sent.
    ///
    /// The host says nothing while it receives an upload, so every `answerEvery` of sending a cheap call
    /// (`virConnectGetLibVersion`) gets an answer from it: a connection whose keepalive closes it after some
    /// seconds without a word from the host (and sends no probes of its own, see `HostConnection`) would
    /// otherwise be closed under a long upload.
    @discardableResult
    public func upload(contentsOf path: String, chunkSize: Int = 1 << 20, answerEvery: Duration = .seconds(2)) throws(LibvirtError) -> UInt64 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw LibvirtError(code: -1, domain: 0, message: "cannot open \(path): \(String(cString: strerror(errno)))", operation: "upload")
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            throw LibvirtError(code: -1, domain: 0, message: "cannot stat \(path): \(String(cString: strerror(errno)))", operation: "upload")
        }
        let length = UInt64(status.st_size)
        let stream = try LibvirtByteStream(connection: connection)
        guard virStorageVolUpload(pointer, stream.pointer, 0, length, 0) == 0 else {
            throw LibvirtError.last("virStorageVolUpload(\(name))")
        }
        var buffer = [UInt8](repeating: 0, count: chunkSize)
        var sent: UInt64 = 0
        let clock = ContinuousClock()
        var lastAnswer = clock.now
        while sent < length {
            if lastAnswer.duration(to: clock.now) >= answerEvery {
                var version: UInt = 0
                guard virConnectGetLibVersion(connection, &version) == 0 else {
                    let error = LibvirtError.last("virConnectGetLibVersion")
                    stream.abort()
                    throw error
                }
                lastAnswer = clock.now
            }
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, chunkSize) }
            guard count > 0 else {
                stream.abort()
                throw LibvirtError(
                    code: -1, domain: 0, message: "\(path) ended after \(sent) of \(length) bytes", operation: "upload")
            }
            try stream.sendAll(buffer, count: count)
            sent += UInt64(count)
        }
        try stream.finish()
        return sent
    }

    /// Writes `bytes` over the volume's content from `offset` on, leaving the rest of it as it is (libvirt's
    /// upload with an offset and a length does not truncate): how a few bytes in a large file on a remote host
    /// change without the file crossing the connection. Returns the bytes sent.
    @discardableResult
    public func overwrite(_ bytes: [UInt8], at offset: UInt64) throws(LibvirtError) -> UInt64 {
        let stream = try LibvirtByteStream(connection: connection)
        guard virStorageVolUpload(pointer, stream.pointer, offset, UInt64(bytes.count), 0) == 0 else {
            throw LibvirtError.last("virStorageVolUpload(\(name))")
        }
        try stream.sendAll(bytes, count: bytes.count)
        try stream.finish()
        return UInt64(bytes.count)
    }

    /// Reads `length` bytes of the volume from `offset` on (fewer if it ends first), streamed over the connection.
    public func bytes(at offset: UInt64, length: UInt64) throws(LibvirtError) -> [UInt8] {
        let stream = try LibvirtByteStream(connection: connection)
        guard virStorageVolDownload(pointer, stream.pointer, offset, length, 0) == 0 else {
            throw LibvirtError.last("virStorageVolDownload(\(name))")
        }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = buffer.withUnsafeMutableBytes { virStreamRecv(stream.pointer, $0.baseAddress, $0.count) }
            if count == 0 { break }
            guard count > 0 else {
                let error = LibvirtError.last("virStreamRecv")
                stream.abort()
                throw error
            }
            out += buffer[0..<Int(count)]
        }
        try stream.finish()
        return out
    }

    /// The volume's content from the start, streamed over the libvirt connection into the local file at `path`
    /// (made or truncated). Returns the bytes received.
    @discardableResult
    public func download(to path: String, chunkSize: Int = 1 << 20) throws(LibvirtError) -> UInt64 {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw LibvirtError(code: -1, domain: 0, message: "cannot open \(path): \(String(cString: strerror(errno)))", operation: "download")
        }
        defer { close(fd) }
        let stream = try LibvirtByteStream(connection: connection)
        guard virStorageVolDownload(pointer, stream.pointer, 0, 0, 0) == 0 else {
            throw LibvirtError.last("virStorageVolDownload(\(name))")
        }
        var buffer = [UInt8](repeating: 0, count: chunkSize)
        var received: UInt64 = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { virStreamRecv(stream.pointer, $0.baseAddress, chunkSize) }
            if count == 0 { break }
            guard count > 0 else {
                let error = LibvirtError.last("virStreamRecv")
                stream.abort()
                throw error
            }
            var written = 0
            while written < Int(count) {
                let result = buffer.withUnsafeBytes { bytes in
                    bytes.baseAddress.map { write(fd, $0 + written, Int(count) - written) } ?? -1
                }
                guard result > 0 else {
                    stream.abort()
                    throw LibvirtError(
                        code: -1, domain: 0, message: "cannot write \(path): \(String(cString: strerror(errno)))", operation: "download")
                }
                written += result
            }
            received += UInt64(count)
        }
        try stream.finish()
        return received
    }

    /// Deletes the volume and its file on the host.
    public func delete() throws(LibvirtError) {
        guard virStorageVolDelete(pointer, 0) == 0 else { throw LibvirtError.last("virStorageVolDelete(\(name))") }
    }
}

extension Connection {
    /// Defines a persistent storage pool from its XML (`<pool type='dir'><name>…</name><target><path>…`).
    public func defineStoragePool(xml: String) throws(LibvirtError) -> StoragePool {
        guard let pool = virStoragePoolDefineXML(pointer, xml, 0) else { throw LibvirtError.last("virStoragePoolDefineXML") }
        return StoragePool(pool, connection: pointer)
    }

    /// The storage pool with this name, or nil if there is none.
    public func storagePool(named name: String) throws(LibvirtError) -> StoragePool? {
        if let pool = virStoragePoolLookupByName(pointer, name) { return StoragePool(pool, connection: pointer) }
        let error = LibvirtError.last("virStoragePoolLookupByName(\(name))")
        if error.code == Int32(VIR_ERR_NO_STORAGE_POOL.rawValue) { return nil }
        throw error
    }

    /// Every storage pool the host knows, active or not.
    public func allStoragePools() throws(LibvirtError) -> [StoragePool] {
        var list: UnsafeMutablePointer<virStoragePoolPtr?>?
        let count = virConnectListAllStoragePools(pointer, &list, 0)
        guard count >= 0, let list else { throw LibvirtError.last("virConnectListAllStoragePools") }
        defer { free(list) }
        return (0..<Int(count)).compactMap { index in list[index].map { StoragePool($0, connection: pointer) } }
    }
}

/// A blocking libvirt data stream for one transfer; freed at deinit. Internal: callers see upload and download.
final class LibvirtByteStream {
    let pointer: virStreamPtr
    private var done = false

    init(connection: virConnectPtr) throws(LibvirtError) {
        guard let pointer = virStreamNew(connection, 0) else { throw LibvirtError.last("virStreamNew") }
        self.pointer = pointer
    }

    deinit {
        if !done { virStreamAbort(pointer) }
        virStreamFree(pointer)
    }

    /// Sends `count` bytes of `buffer`, however many calls that takes.
    func sendAll(_ buffer: [UInt8], count: Int) throws(LibvirtError) {
        var offset = 0
        while offset < count {
            let sent = buffer.withUnsafeBytes { bytes in
                bytes.baseAddress.map { virStreamSend(pointer, $0.assumingMemoryBound(to: CChar.self) + offset, count - offset) } ?? -1
            }
            guard sent > 0 else {
                let error = LibvirtError.last("virStreamSend")
                abort()
                throw error
            }
            offset += Int(sent)
        }
    }

    /// Tells the far end the transfer is complete and waits for it to confirm (errors on its side surface here).
    func finish() throws(LibvirtError) {
        done = true
        guard virStreamFinish(pointer) == 0 else { throw LibvirtError.last("virStreamFinish") }
    }

    func abort() {
        guard !done else { return }
        done = true
        virStreamAbort(pointer)
    }
}
