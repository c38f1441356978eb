import CompressNIO
import NIOCore
import VMSessionCore

/// Turns what a hypervisor hands back for a screenshot into the PNG the API promises.
///
/// libvirt streams QEMU's screen as PPM (P6), which browsers cannot show; the PNG is written here with
/// zlib from CompressNIO (already in the build through hummingbird-websocket) for the one part that is
/// not trivial, the deflate stream. The rest of PNG is four chunks and a CRC.
public enum ScreenshotImage {
    /// The largest screen accepted (16384 × 16384 pixels), so that a bogus header cannot make us allocate.
    static let maximumSide = 16384

    /// The image as PNG: a PNG is passed through, a PPM (P6, 8 bits) is converted.
    public static func png(from data: [UInt8], mimeType: String) throws(VMSessionError) -> [UInt8] {
        if data.starts(with: pngSignature) { return data }
        let image = try decodePPM(data)
        return try encodePNG(width: image.width, height: image.height, rgb: data[image.pixels])
    }

    /// Width, height and where the RGB bytes are in a binary PPM.
    static func decodePPM(_ data: [UInt8]) throws(VMSessionError) -> (width: Int, height: Int, pixels: Range<Int>) {
        let bad = VMSessionError(.hypervisorError, "The hypervisor's screenshot is not an image vmsessiond can read (P6 PPM or PNG).")
        guard data.starts(with: Array("P6".utf8)) else { throw bad }
        var index = 2
        var numbers: [Int] = []
        while numbers.count < 3 {
            // Whitespace and comments, then a decimal number.
            while index < data.count, data[index] == 0x23 || isSpace(data[index]) {
                if data[index] == 0x23 {
                    while index < data.count, data[index] != 0x0a { index += 1 }
                } else {
                    index += 1
                }
            }
            var value = 0
            let start = index
            while index < data.count, (0x30...0x39).contains(data[index]), index - start < 6 {
                value = value * 10 + Int(data[index] - 0x30)
                index += 1
            }
            guard index > start else { throw bad }
            numbers.append(value)
        }
        // Exactly one whitespace byte ends the header.
        guard index < data.count, isSpace(data[index]) else { throw bad }
        index += 1
        let (width, height, maximum) = (numbers[0], numbers[1], numbers[2])
        guard (1...maximumSide).contains(width), (1...maximumSide).contains(height), maximum == 255 else { throw bad }
        let count = width * height * 3
        guard data.count - index >= count else { throw bad }
        return (width, height, index..<(index + count))
    }

    /// An 8-bit RGB PNG (no interlace, filter 0 on every row).
    static func encodePNG(width: Int, height: Int, rgb: ArraySlice<UInt8>) throws(VMSessionError) -> [UInt8] {
        let rowBytes = width * 3
        var raw = ByteBuffer()
        raw.reserveCapacity((rowBytes + 1) * height)
        var offset = rgb.startIndex
        for _ in 0..<height {
            raw.writeInteger(UInt8(0))
            raw.writeBytes(rgb[offset..<(offset + rowBytes)])
            offset += rowBytes
        }
        let compressed: ByteBuffer
        do {
            compressed = try raw.compress(with: .zlib())
        } catch {
            throw VMSessionError(.hypervisorError, "Could not compress the screenshot.", cause: error)
        }
        var header: [UInt8] = []
        append(UInt32(width), to: &header)
        append(UInt32(height), to: &header)
        header += [8, 2, 0, 0, 0]  // 8 bits, truecolour RGB, deflate, adaptive filtering, no interlace
        var png = pngSignature
        chunk("IHDR", header, into: &png)
        chunk("IDAT", compressed.readableBytesView, into: &png)
        chunk("IEND", [], into: &png)
        return png
    }

    static let pngSignature: [UInt8] = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]

    private static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0d).contains(byte) }

    private static func append(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes += [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)]
    }

    private static func chunk<Data: Collection<UInt8>>(_ type: String, _ data: Data, into png: inout [UInt8]) {
        append(UInt32(data.count), to: &png)
        let start = png.count
        png += Array(type.utf8)
        png += data
        append(crc32(png[start...]), to: &png)
    }

    /// CRC-32 (ISO 3309, as PNG specifies) of a chunk's type and data.
    static func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xffff_ffff
        for byte in bytes { crc = crcTable[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8) }
        return crc ^ 0xffff_ffff
    }

    private static let crcTable: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 == 1 ? 0xedb8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }
}
