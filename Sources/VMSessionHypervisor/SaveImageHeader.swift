import Foundation
import VMSessionCore

/// The header of a libvirt QEMU save image (`virDomainSave`'s file; libvirt's `qemu_saveimage.h`, format
/// version 2): a magic, four numbers, and a block of `dataLength` bytes holding the domain's XML and a
/// migration cookie, each NUL-terminated, padded with zeros; the QEMU migration stream follows.
///
/// Why the daemon reads and writes it: libvirt 9.0 restores a save image under another XML only if its
/// name and uuid stay the same (its ABI check refuses "Target domain uuid … does not match source", and then
/// "Target domain name …", measured here), so two sessions could never run from one template. The header's
/// XML is what a plain `virDomainRestore` starts, and libvirt pads it (64 KiB) so that it can be replaced in
/// place; the memory after it is never touched.
public struct SaveImageHeader: Equatable, Sendable {
    public static let magic = Array("LibvirtQemudSave".utf8)
    /// Magic (16), version, data length, was-running, compressed, cookie offset (5 × 4), unused (14 × 4).
    public static let size = 92

    public var version: UInt32
    public var dataLength: UInt32
    public var wasRunning: UInt32
    public var compressed: UInt32
    public var xml: String
    public var cookie: [UInt8]

    /// The largest data block read as a header: libvirt pads it to 64 KiB; anything near this is not a template's.
    public static let maximumDataLength = 16 << 20

    /// The first ``size`` + `dataLength` bytes of the save image `image` (named in errors), read through
    /// `read(offset, length)`: a local file, or a volume on a remote host. Checked to parse.
    public static func headerBytes<E: Error>(
        of image: String, _ read: (_ offset: UInt64, _ length: Int) throws(E) -> [UInt8]
    ) throws -> [UInt8] {
        let start = try read(0, size)
        guard start.count == size else { throw VMSessionError(.ioError, "\(image) is too short for a save image.") }
        let length = Int(start[20]) | Int(start[21]) << 8 | Int(start[22]) << 16 | Int(start[23]) << 24
        guard length <= maximumDataLength else { throw VMSessionError(.ioError, "\(image) has a header of \(length) bytes; not a template's.") }
        let bytes = start + (try read(UInt64(size), length))
        _ = try SaveImageHeader(parsing: bytes)
        return bytes
    }

    /// Parses the first ``size`` + `dataLength` bytes of a save image (more may follow; they are ignored).
    public init(parsing bytes: [UInt8]) throws(VMSessionError) {
        guard bytes.count >= Self.size, Array(bytes[0..<16]) == Self.magic else {
            throw VMSessionError(.ioError, "The file is not a complete libvirt QEMU save image (no 'LibvirtQemudSave' header).")
        }
        func word(_ index: Int) -> UInt32 {
            let offset = 16 + 4 * index
            return UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
        }
        version = word(0)
        dataLength = word(1)
        wasRunning = word(2)
        compressed = word(3)
        let cookieOffset = Int(word(4))
        guard version == 2, compressed == 0, bytes.count >= Self.size + Int(dataLength), cookieOffset < Int(dataLength) else {
            throw VMSessionError(
                .notSupported, "The save image has format version \(version), compression \(compressed): only an uncompressed version 2 is read.")
        }
        let data = bytes[Self.size..<(Self.size + Int(dataLength))]
        guard let xmlEnd = data.firstIndex(of: 0) else { throw VMSessionError(.ioError, "The save image's XML is not terminated.") }
        xml = String(decoding: data[data.startIndex..<xmlEnd], as: UTF8.self)
        if cookieOffset > 0 {
            let cookieStart = data.startIndex + cookieOffset
            let cookieEnd = data[cookieStart...].firstIndex(of: 0) ?? data.endIndex
            cookie = Array(data[cookieStart..<cookieEnd])
        } else {
            cookie = []
        }
    }

    /// The header as bytes, exactly ``size`` + `dataLength` long, so that it replaces the old one in place.
    /// Throws if the XML and the cookie no longer fit.
    public func encoded() throws(VMSessionError) -> [UInt8] {
        var data = Array(xml.utf8) + [0]
        let cookieOffset = cookie.isEmpty ? 0 : UInt32(data.count)
        if !cookie.isEmpty { data += cookie + [0] }
        guard data.count <= Int(dataLength) else {
            throw VMSessionError(
                .invalidArgument, "The new domain XML (\(data.count) bytes) does not fit the save image's header (\(dataLength) bytes).")
        }
        data += [UInt8](repeating: 0, count: Int(dataLength) - data.count)
        var out = Self.magic
        for value in [version, dataLength, wasRunning, compressed, cookieOffset] + [UInt32](repeating: 0, count: 14) {
            out += [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 24)]
        }
        return out + data
    }
}

/// A template's saved domain XML made into one session's: every mention of the session the template was
/// made from (its uuid: the domain's name, uuid, metadata, and every path under its machine directory or its
/// socket directory) becomes the new session's, its title and metadata carry the new session's name, and
/// the disks' recorded backing chains go, so that libvirt and QEMU read each chain from the qcow2 headers:
/// the new disk is an overlay on the template's disk, which the saved XML (an empty `<backingStore/>` for a
/// disk that had none) would otherwise hide.
public enum TemplateDomainXML {
    public static func retarget(_ xml: String, from source: SessionID, to target: SessionID, sessionName: String) throws(VMSessionError) -> String {
        guard Identifier.isValidSessionName(sessionName) else {
            throw VMSessionError(.invalidArgument, "The session name cannot be used in a VM definition.")
        }
        guard xml.contains("<uuid>\(source.description)</uuid>") else {
            throw VMSessionError(.ioError, "The template's saved XML is not the VM of session \(source) it was made from.")
        }
        var out = xml.replacingOccurrences(of: source.description, with: target.description)
        out = replacing(in: out, between: "<title>", and: "</title>", with: "vmsessiond session \(DomainXML.escape(sessionName))")
        // The session's name in the metadata, whichever quotes libvirt wrote it with.
        for quote in ["'", "\""] {
            let marker = "id=\(quote)\(target.description)\(quote) name=\(quote)"
            if let start = out.range(of: marker), let end = out[start.upperBound...].firstIndex(of: Character(quote)) {
                out.replaceSubrange(start.upperBound..<end, with: DomainXML.escape(sessionName))
            }
        }
        // Recorded backing chains: `<backingStore/>` and `<backingStore …>…</backingStore>`, nested or not.
        while let range = out.range(of: "<backingStore") {
            var lineStart = range.lowerBound
            while lineStart > out.startIndex, out[out.index(before: lineStart)] == " " { lineStart = out.index(before: lineStart) }
            let tail = out[range.lowerBound...]
            guard let close = tail.firstIndex(of: ">") else { break }
            var end: String.Index
            if out[out.index(before: close)] == "/" {
                end = out.index(after: close)
            } else {
                // The outermost element ends where the closing tags have matched its opening ones.
                var depth = 0
                var cursor = range.lowerBound
                end = out.endIndex
                while cursor < out.endIndex {
                    let open = out[cursor...].range(of: "<backingStore")
                    guard let shut = out[cursor...].range(of: "</backingStore>") else { break }
                    if let open, open.lowerBound < shut.lowerBound {
                        guard let openClose = out[open.lowerBound...].firstIndex(of: ">") else { break }
                        if out[out.index(before: openClose)] != "/" { depth += 1 }
                        cursor = out.index(after: openClose)
                    } else {
                        depth -= 1
                        cursor = shut.upperBound
                        if depth == 0 {
                            end = shut.upperBound
                            break
                        }
                    }
                }
            }
            if end < out.endIndex, out[end] == "\n" { end = out.index(after: end) }
            out.removeSubrange(lineStart..<end)
        }
        return out
    }

    private static func replacing(in text: String, between open: String, and close: String, with value: String) -> String {
        guard let start = text.range(of: open), let end = text.range(of: close, range: start.upperBound..<text.endIndex) else { return text }
        var out = text
        out.replaceSubrange(start.upperBound..<end.lowerBound, with: value)
        return out
    }
}
