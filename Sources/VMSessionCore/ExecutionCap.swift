/// The share of a host core each vCPU may use, in percent (the plugin's `setExecutionCap`).
/// 100 means no limit.
public struct ExecutionCap: Codable, Equatable, Hashable, Sendable, CustomStringConvertible {
    public let percent: Int

    public static let range = 1...100
    public static let unlimited = ExecutionCap(uncheckedPercent: 100)
    /// The scheduler period the cap is expressed over (100 ms, the kernel's default CFS period).
    public static let periodMicroseconds: UInt64 = 100_000

    public init(percent: Int) throws(VMSessionError) {
        guard Self.range.contains(percent) else {
            throw VMSessionError(.invalidArgument, "'cap' must be between 1 and 100 (percent of a core per vCPU); got \(percent).")
        }
        self.percent = percent
    }

    private init(uncheckedPercent: Int) { self.percent = uncheckedPercent }

    /// The per-vCPU quota for ``periodMicroseconds``, or nil for no limit.
    public var quotaMicroseconds: Int64? {
        percent >= 100 ? nil : Int64(Self.periodMicroseconds) * Int64(percent) / 100
    }

    /// The cap a scheduler setting amounts to: a negative (or missing) quota is no limit; otherwise the
    /// quota's share of the period, rounded and kept within ``range``.
    public static func applied(quotaMicroseconds quota: Int64, periodMicroseconds period: UInt64) -> ExecutionCap {
        guard quota >= 0, period > 0 else { return .unlimited }
        let percent = Int((Double(quota) * 100 / Double(period)).rounded())
        return ExecutionCap(uncheckedPercent: min(max(percent, range.lowerBound), range.upperBound))
    }

    public var description: String { "\(percent)%" }

    public init(from decoder: any Decoder) throws {
        let value = try decoder.singleValueContainer().decode(Int.self)
        self = try ExecutionCap(percent: value)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(percent)
    }
}
