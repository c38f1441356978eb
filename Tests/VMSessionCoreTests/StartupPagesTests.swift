import Testing
import VMSessionCore

@Suite("Start-up pages")
struct StartupPagesTests {
    /// Lines as the release daemon's /proc/PID/maps gives them (kernel 6.x), one of each kind of mapping.
    static let maps = """
        56234d4a2000-5623505d3000 r-xp 00000000 fe:00 16270453                   /usr/lib/vmsessiond/vmsessiond
        5623505d4000-562350725000 r--p 03131000 fe:00 16270453                   /usr/lib/vmsessiond/vmsessiond
        562350725000-562352cd2000 rw-p 03282000 fe:00 16270453                   /usr/lib/vmsessiond/vmsessiond
        562352cd2000-562352e00000 rw-p 00000000 00:00 0                          [heap]
        7f9e745f2000-7f9e745fa000 rw-s 00000000 fe:00 16269890                   /var/lib/vmsessiond/vmsessiond.sqlite-shm
        7f9e74600000-7f9e74e00000 rw-p 00000000 00:00 0 
        7f9e75000000-7f9e75028000 r--p 00000000 fe:00 1049133                    /usr/lib/x86_64-linux-gnu/libc.so.6
        7f9e75028000-7f9e7519d000 r-xp 00028000 fe:00 1049133                    /usr/lib/x86_64-linux-gnu/libc.so.6
        7f9e7519d000-7f9e751f5000 ---p 0019d000 fe:00 1049133                    /usr/lib/x86_64-linux-gnu/libc.so.6
        7f9e751f5000-7f9e751f9000 r--p 001f4000 fe:00 1049133                    /usr/lib/x86_64-linux-gnu/libc.so.6
        7f9e751f9000-7f9e751fb000 rw-p 001f8000 fe:00 1049133                    /usr/lib/x86_64-linux-gnu/libc.so.6
        7f9e76000000-7f9e76100000 r--p 00000000 00:05 2048                       /memfd:vmsessiond (deleted)
        7f9e76100000-7f9e76101000 r--s 00000000 00:06 5                          /dev/dri/renderD128
        7f9e76200000-7f9e76300000 r--p 00000000 fe:00 1050000                    /usr/share/vmsessiond/a file with spaces.dat
        7ffd2b5c1000-7ffd2b5e2000 rw-p 00000000 00:00 0                          [stack]
        7ffd2b5f4000-7ffd2b5f8000 r--p 00000000 00:00 0                          [vvar]
        7ffd2b5f8000-7ffd2b5fa000 r-xp 00000000 00:00 0                          [vdso]
        """

    @Test("private read-only file mappings are selected: the binary's and each library's code and read-only data")
    func selectsReadOnlyFileMappings() {
        let selected = StartupPages.reclaimable(procMaps: Self.maps)
        #expect(selected == [
            .init(start: 0x5623_4d4a_2000, end: 0x5623_505d_3000, path: "/usr/lib/vmsessiond/vmsessiond"),
            .init(start: 0x5623_505d_4000, end: 0x5623_5072_5000, path: "/usr/lib/vmsessiond/vmsessiond"),
            .init(start: 0x7f9e_7500_0000, end: 0x7f9e_7502_8000, path: "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            .init(start: 0x7f9e_7502_8000, end: 0x7f9e_7519_d000, path: "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            .init(start: 0x7f9e_751f_5000, end: 0x7f9e_751f_9000, path: "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            .init(start: 0x7f9e_7620_0000, end: 0x7f9e_7630_0000, path: "/usr/share/vmsessiond/a file with spaces.dat"),
        ])
    }

    @Test("writable, shared, anonymous, device, memfd and kernel mappings are never selected")
    func leavesEverythingElse() {
        let paths = StartupPages.reclaimable(procMaps: Self.maps).map(\.path)
        for excluded in ["[heap]", "[stack]", "[vvar]", "[vdso]", "/dev/dri/renderD128", "/memfd:vmsessiond (deleted)",
                         "/var/lib/vmsessiond/vmsessiond.sqlite-shm"] {
            #expect(!paths.contains(excluded))
        }
        // The binary's writable mapping (relocated tables, .data, .bss) is not among the binary's two selected.
        #expect(!StartupPages.reclaimable(procMaps: Self.maps).contains { $0.start == 0x5623_5072_5000 })
    }

    @Test("lines it does not understand select nothing", arguments: [
        "", "garbage", "56234d4a2000 r-xp 00000000 fe:00 16270453 /usr/bin/x", "zz-56234d4a2000 r-xp 00000000 fe:00 1 /usr/bin/x",
        "5623505d3000-56234d4a2000 r-xp 00000000 fe:00 16270453 /usr/bin/x", "56234d4a2000-5623505d3000 r-x 00000000 fe:00 1 /usr/bin/x",
        "56234d4a2000-5623505d3000 r-xp 00000000 fe:00 0 /usr/bin/x",
    ])
    func malformedLines(line: String) {
        #expect(StartupPages.reclaimable(procMaps: line).isEmpty)
    }
}
