/// Which of the daemon's memory mappings hold pages it can hand back to the kernel once start-up is over.
///
/// Why: start-up (argument parsing, configuration, the store's migrations, NIO and Hummingbird set-up,
/// libvirt's driver loading, the dynamic linker's relocations) runs through megabytes of code and
/// read-only data that an idle daemon never touches again, and every page fault maps 64 KiB of the file
/// around it. In the release build these pages of the daemon's own binary were half of its idle RSS.
/// A page of a private mapping that is not writable is never changed by the process, so the kernel can
/// always read it back from its file: advising it to page such a mapping out (`MADV_PAGEOUT`) loses
/// nothing, and what the daemon still runs comes back at its next use (the kernel also keeps pages it saw
/// used lately). Writable mappings are left alone (they hold the process's own data: relocated tables,
/// `.data`, `.bss`), and so are shared mappings (SQLite's `-shm` file), devices and anonymous memory.
public enum StartupPages {
    /// One mapping of a file into the process, as a line of `/proc/self/maps` gives it.
    public struct Mapping: Equatable, Sendable {
        public let start: UInt
        public let end: UInt
        public let path: String

        public init(start: UInt, end: UInt, path: String) {
            self.start = start
            self.end = end
            self.path = path
        }

        public var length: UInt { end - start }
    }

    /// The mappings of `procMaps` (the text of `/proc/self/maps`) that can be paged out without loss:
    /// private, not writable, backed by a file (not a device, memfd or System V segment). Lines it does not
    /// understand are skipped, so a format it does not know selects less, never more.
    public static func reclaimable(procMaps: String) -> [Mapping] {
        procMaps.split(separator: "\n").compactMap { line in
            // address perms offset dev inode path: the path is the rest of the line and may hold spaces.
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count == 6 else { return nil }
            let perms = Array(fields[1].utf8)
            guard perms.count == 4, perms[0] == UInt8(ascii: "r"), perms[1] == UInt8(ascii: "-"), perms[3] == UInt8(ascii: "p")
            else { return nil }
            guard fields[4] != "0" else { return nil }
            let path = fields[5].drop(while: { $0 == " " })
            guard path.hasPrefix("/"), !path.hasPrefix("/dev/"), !path.hasPrefix("/memfd:"), !path.hasPrefix("/SYSV") else { return nil }
            let bounds = fields[0].split(separator: "-")
            guard bounds.count == 2, let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16), start < end
            else { return nil }
            return Mapping(start: start, end: end, path: String(path))
        }
    }
}
