#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's open-file limit. A shell's soft limit is often 1024 while the hard limit is far higher;
/// the daemon raises its soft limit to the hard one at start (as systemd's `LimitNOFILE` would), and sizes its
/// connection budget from what it got.
enum DescriptorLimit {
    /// Raises the soft limit to the hard limit (capped at 1,048,576) and returns the soft limit in force.
    static func raiseToHard() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        let target = min(limit.rlim_max, 1 << 20)
        if limit.rlim_cur < target {
            var raised = limit
            raised.rlim_cur = target
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return Int(target) }
        }
        return Int(min(limit.rlim_cur, 1 << 20))
    }
}
