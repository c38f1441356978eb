#if canImport(Glibc)
import Glibc
#endif
import CMalloc
import Logging
import ServiceLifecycle
import VMSessionCore

/// Hands back, once start-up has settled (and then every hour), the memory that only start-up needed, so
/// that an idle daemon holds what it runs and not what it ran once.
///
/// Why a step of its own: most of an idle release daemon's RSS was pages of its own binary that start-up
/// faulted in (argument parsing, configuration, migrations, NIO and Hummingbird set-up, relocations) and
/// never touched again; glibc also keeps the heap start-up freed. `settle` after the group starts (the
/// server listens by then, and the housekeeper has made its first pass) it returns freed heap (`malloc_trim`) and
/// advises the kernel to page out the process's private read-only file mappings (`MADV_PAGEOUT` over what
/// ``StartupPages`` selects), which the kernel reads back from their files at their next use; the kernel
/// keeps what it saw used lately. It does the same again every `interval`, so that a burst of work (a
/// thousand sessions opened, a download) does not leave its code and freed heap resident for good.
struct StartupMemoryRelease: Service {
    static let settle: Duration = .seconds(2)
    static let interval: Duration = .seconds(3600)

    let clock: any Clock<Duration>
    let settle: Duration
    let interval: Duration
    let logger: Logger

    init(clock: any Clock<Duration> = ContinuousClock(), settle: Duration = Self.settle, interval: Duration = Self.interval, logger: Logger) {
        self.clock = clock
        self.settle = settle
        self.interval = interval
        self.logger = logger
    }

    func run() async throws {
        var next = settle
        while !Task.isCancelled {
            let wait = next
            do { try await cancelWhenGracefulShutdown { try await clock.sleep(for: wait) } } catch { return }
            guard !Task.isShuttingDownGracefully else { return }
            // madvise(MADV_PAGEOUT) reclaims synchronously, tens of milliseconds: off the cooperative pool.
            let outcome = await offPool(qos: .utility) { Self.release() }
            logger.info(
                "memory released",
                metadata: ["rssBeforeKiB": "\(outcome.before)", "afterTrimKiB": "\(outcome.afterTrim)", "afterPageOutKiB": "\(outcome.after)",
                           "advisedKiB": "\(outcome.advised / 1024)", "failures": "\(outcome.failures)"])
            next = interval
        }
    }

    struct Outcome {
        var before = 0
        var afterTrim = 0
        var after = 0
        var advised: UInt = 0
        var failures = 0
    }

    /// The release itself, with the resident set before, after the heap trim, and after the page-out (KiB).
    static func release() -> Outcome {
        var outcome = Outcome()
        outcome.before = residentKiB()
        malloc_trim(0)
        outcome.afterTrim = residentKiB()
        for mapping in StartupPages.reclaimable(procMaps: readProcFile("/proc/self/maps") ?? "") {
            // A hint: a kernel without MADV_PAGEOUT (before 5.4) answers EINVAL and nothing changes.
            if madvise(UnsafeMutableRawPointer(bitPattern: mapping.start), Int(mapping.length), MADV_PAGEOUT) == 0 {
                outcome.advised += mapping.length
            } else {
                outcome.failures += 1
            }
        }
        outcome.after = residentKiB()
        return outcome
    }

    /// The process's resident set in KiB, from the second field of /proc/self/statm (pages).
    static func residentKiB() -> Int {
        guard let statm = readProcFile("/proc/self/statm") else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE))) / 1024
    }

    /// A procfs file's text (their size reads as 0, so they are read to the end in chunks).
    static func readProcFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
