import CLibvirt
import Foundation

/// Which groups of statistics ``Connection/allDomainStats(_:)`` asks libvirt for (`VIR_DOMAIN_STATS_*`).
public struct DomainStatsGroups: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let state = Self(rawValue: VIR_DOMAIN_STATS_STATE.rawValue)
    public static let cpuTotal = Self(rawValue: VIR_DOMAIN_STATS_CPU_TOTAL.rawValue)
    public static let balloon = Self(rawValue: VIR_DOMAIN_STATS_BALLOON.rawValue)
    public static let vcpu = Self(rawValue: VIR_DOMAIN_STATS_VCPU.rawValue)
    public static let interface = Self(rawValue: VIR_DOMAIN_STATS_INTERFACE.rawValue)
    public static let block = Self(rawValue: VIR_DOMAIN_STATS_BLOCK.rawValue)
}

/// One value of libvirt's typed parameters (`virTypedParameter`).
public enum TypedValue: Equatable, Sendable {
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case bool(Bool)
    case string(String)

    /// The value as a number, if it is one.
    public var number: Double? {
        switch self {
        case .int(let value): Double(value)
        case .uint(let value): Double(value)
        case .double(let value): value
        case .bool(let value): value ? 1 : 0
        case .string: nil
        }
    }
}

/// One domain's statistics: libvirt's fields by name (`cpu.time`, `balloon.rss`, `block.0.rd.bytes`, …),
/// as `virConnectGetAllDomainStats` returns them.
public struct DomainStatsRecord: Sendable {
    public let domainName: String
    public let fields: [String: TypedValue]

    public init(domainName: String, fields: [String: TypedValue]) {
        self.domainName = domainName
        self.fields = fields
    }
}

extension Connection {
    /// The statistics of every domain in one call (`virConnectGetAllDomainStats`), as the libvirt exporters
    /// read them. `nowait` (`VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT`) leaves out what would wait for a
    /// domain's job (a VM busy saving, say) instead of waiting; drivers that do not know the flag refuse it.
    public func allDomainStats(_ groups: DomainStatsGroups, nowait: Bool = false) throws(LibvirtError) -> [DomainStatsRecord] {
        var records: UnsafeMutablePointer<virDomainStatsRecordPtr?>?
        let flags = nowait ? UInt32(VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT.rawValue) : 0
        let count = virConnectGetAllDomainStats(pointer, groups.rawValue, &records, flags)
        guard count >= 0 else { throw LibvirtError.last("virConnectGetAllDomainStats") }
        guard let records else { return [] }
        defer { virDomainStatsRecordListFree(records) }
        var result: [DomainStatsRecord] = []
        for index in 0..<Int(count) {
            guard let record = records[index]?.pointee, let name = virDomainGetName(record.dom) else { continue }
            var fields: [String: TypedValue] = [:]
            for param in UnsafeBufferPointer(start: record.params, count: Int(record.nparams)) {
                let field = withUnsafeBytes(of: param.field) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if let value = Self.typedValue(param) { fields[field] = value }
            }
            result.append(DomainStatsRecord(domainName: String(cString: name), fields: fields))
        }
        return result
    }

    static func typedValue(_ param: virTypedParameter) -> TypedValue? {
        switch UInt32(param.type) {
        case VIR_TYPED_PARAM_INT.rawValue: .int(Int64(param.value.i))
        case VIR_TYPED_PARAM_UINT.rawValue: .uint(UInt64(param.value.ui))
        case VIR_TYPED_PARAM_LLONG.rawValue: .int(param.value.l)
        case VIR_TYPED_PARAM_ULLONG.rawValue: .uint(param.value.ul)
        case VIR_TYPED_PARAM_DOUBLE.rawValue: .double(param.value.d)
        case VIR_TYPED_PARAM_BOOLEAN.rawValue: .bool(param.value.b != 0)
        case VIR_TYPED_PARAM_STRING.rawValue: param.value.s.map { .string(String(cString: $0)) }
        default: nil
        }
    }
}
