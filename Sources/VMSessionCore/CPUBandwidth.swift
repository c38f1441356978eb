/// A CFS bandwidth limit for a whole VM process: `quota` microseconds of CPU time per `period`, the unit of
/// cgroup v1's `cpu.cfs_quota_us`/`cpu.cfs_period_us` and of cgroup v2's `cpu.max`.
///
/// It exists because the execution cap means "this share of a core per vCPU", while a cgroup limits the
/// whole process (every vCPU thread and QEMU's own threads together): the VM's cgroup gets `vcpus` times
/// the per-vCPU share. Pure arithmetic, so that every cap mechanism agrees on it and it is tested once.
public struct CPUBandwidth: Equatable, Sendable, CustomStringConvertible {
    /// Microseconds per period, or nil for no limit.
    public let quotaMicroseconds: Int64?
    public let periodMicroseconds: UInt64

    /// The kernel refuses quotas below 1 ms.
    public static let minimumQuotaMicroseconds: Int64 = 1000

    public init(quotaMicroseconds: Int64?, periodMicroseconds: UInt64) {
        self.quotaMicroseconds = quotaMicroseconds
        self.periodMicroseconds = periodMicroseconds
    }

    /// The limit that holds a VM with `vcpus` vCPUs to `cap` of a core per vCPU, over ``ExecutionCap/periodMicroseconds``.
    public init(cap: ExecutionCap, vcpus: Int) {
        periodMicroseconds = ExecutionCap.periodMicroseconds
        guard let perVCPU = cap.quotaMicroseconds else {
            quotaMicroseconds = nil
            return
        }
        quotaMicroseconds = max(perVCPU * Int64(max(vcpus, 1)), Self.minimumQuotaMicroseconds)
    }

    /// The per-vCPU cap this limit amounts to for a VM with `vcpus` vCPUs (rounded, within 1…100).
    public func cap(vcpus: Int) -> ExecutionCap {
        guard let quotaMicroseconds else { return .unlimited }
        return ExecutionCap.applied(quotaMicroseconds: quotaMicroseconds / Int64(max(vcpus, 1)), periodMicroseconds: periodMicroseconds)
    }

    /// cgroup v2's `cpu.max` text: `QUOTA PERIOD` or `max PERIOD`.
    public var cpuMax: String {
        "\(quotaMicroseconds.map(String.init) ?? "max") \(periodMicroseconds)"
    }

    /// Parses cgroup v2's `cpu.max`; nil if it is not `QUOTA|max PERIOD`.
    public init?(cpuMax text: String) {
        let fields = text.split(whereSeparator: \.isWhitespace)
        guard fields.count == 2, let period = UInt64(fields[1]), period > 0 else { return nil }
        if fields[0] == "max" {
            self.init(quotaMicroseconds: nil, periodMicroseconds: period)
        } else if let quota = Int64(fields[0]), quota > 0 {
            self.init(quotaMicroseconds: quota, periodMicroseconds: period)
        } else {
            return nil
        }
    }

    /// cgroup v1's `cpu.cfs_quota_us` value: -1 for no limit.
    public var cfsQuota: Int64 { quotaMicroseconds ?? -1 }

    /// From cgroup v1's `cpu.cfs_quota_us` (negative: no limit) and `cpu.cfs_period_us`.
    public init?(cfsQuota: Int64, cfsPeriod: UInt64) {
        guard cfsPeriod > 0 else { return nil }
        self.init(quotaMicroseconds: cfsQuota < 0 ? nil : cfsQuota, periodMicroseconds: cfsPeriod)
    }

    public var description: String { cpuMax }
}
