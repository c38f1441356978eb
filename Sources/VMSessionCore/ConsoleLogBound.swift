/// How much of a VM's console log may take space on disk (`console.logBytes`).
///
/// QEMU only ever appends to the log, and the log is both the console's history and its live feed (see
/// ``ConsoleHistory``), so a guest that prints without end would fill the disk. The daemon frees the log's
/// head instead: it punches a hole in the file, so that the file's size, every offset in it and QEMU's
/// appending descriptor stay as they are, and only about the newest ``keepBytes`` take space. (Rotating or
/// truncating the file would race QEMU's writes and move the offsets the console follows.)
///
/// A value with no I/O: it says which range to free, and its owner frees it.
public struct ConsoleLogBound: Equatable, Sendable {
    /// The newest bytes that always stay (at least the console's history, which is read from them).
    public let keepBytes: UInt64
    /// How far past ``keepBytes`` the log may grow before its head is freed, so that each pass frees a
    /// good share at once rather than a block at a time.
    public var slackBytes: UInt64 { max(keepBytes / 4, 64 * 1024) }

    public init(keepBytes: UInt64) {
        self.keepBytes = keepBytes
    }

    /// The head to free, from offset 0, for a log of `size` bytes of which `allocated` take space on disk
    /// (`st_blocks` × 512), on a file system of `blockSize`-byte blocks; nil while it is within bounds.
    /// The range ends on a block boundary at least ``keepBytes`` before the end, so what stays readable is
    /// never less than ``keepBytes``; freeing it again is harmless (it is already a hole).
    public func head(size: UInt64, allocated: UInt64, blockSize: UInt64) -> Range<UInt64>? {
        guard allocated > keepBytes + slackBytes, size > keepBytes else { return nil }
        let block = max(blockSize, 1)
        let end = (size - keepBytes) / block * block
        return end > 0 ? 0..<end : nil
    }
}
