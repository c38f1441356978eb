import Testing
import VMSessionCore

@Suite("CPU bandwidth from an execution cap")
struct CPUBandwidthTests {
    @Test("a cap is the per-vCPU share of a 100 ms period, times the vCPUs, for the whole process", arguments: [
        (10, 1, 10_000), (25, 1, 25_000), (50, 1, 50_000), (75, 1, 75_000), (99, 1, 99_000),
        (25, 2, 50_000), (50, 4, 200_000), (1, 1, 1000), (75, 3, 225_000),
    ])
    func quotaFromCap(percent: Int, vcpus: Int, quota: Int64) throws {
        let bandwidth = CPUBandwidth(cap: try ExecutionCap(percent: percent), vcpus: vcpus)
        #expect(bandwidth.periodMicroseconds == 100_000)
        #expect(bandwidth.quotaMicroseconds == quota)
        #expect(bandwidth.cap(vcpus: vcpus) == (try ExecutionCap(percent: percent)), "reading it back gives the cap")
    }

    @Test("100 % is no limit: cpu.max 'max', cfs_quota_us -1")
    func unlimited() {
        let bandwidth = CPUBandwidth(cap: .unlimited, vcpus: 2)
        #expect(bandwidth.quotaMicroseconds == nil)
        #expect(bandwidth.cpuMax == "max 100000")
        #expect(bandwidth.cfsQuota == -1)
        #expect(bandwidth.cap(vcpus: 2) == .unlimited)
    }

    @Test("zero or negative vCPU counts count as one")
    func atLeastOneVCPU() throws {
        #expect(CPUBandwidth(cap: try ExecutionCap(percent: 30), vcpus: 0).quotaMicroseconds == 30_000)
        #expect(CPUBandwidth(quotaMicroseconds: 30_000, periodMicroseconds: 100_000).cap(vcpus: -1) == (try ExecutionCap(percent: 30)))
    }

    @Test("cgroup v2 cpu.max parses both forms and refuses the rest")
    func cpuMaxParsing() {
        #expect(CPUBandwidth(cpuMax: "25000 100000\n") == CPUBandwidth(quotaMicroseconds: 25_000, periodMicroseconds: 100_000))
        #expect(CPUBandwidth(cpuMax: "max 100000") == CPUBandwidth(quotaMicroseconds: nil, periodMicroseconds: 100_000))
        for bad in ["", "max", "25000", "x 100000", "25000 0", "0 100000", "-5 100000", "1 2 3"] {
            #expect(CPUBandwidth(cpuMax: bad) == nil, "\(bad)")
        }
    }

    @Test("cgroup v1 values: a negative quota is no limit; a period of 0 is refused")
    func cfsValues() throws {
        #expect(CPUBandwidth(cfsQuota: -1, cfsPeriod: 100_000)?.quotaMicroseconds == nil)
        #expect(CPUBandwidth(cfsQuota: 50_000, cfsPeriod: 200_000)?.cap(vcpus: 1) == (try ExecutionCap(percent: 25)))
        #expect(CPUBandwidth(cfsQuota: 50_000, cfsPeriod: 0) == nil)
    }

    @Test("a read-back cap is rounded and kept within 1…100")
    func readBackClamped() throws {
        #expect(CPUBandwidth(quotaMicroseconds: 500, periodMicroseconds: 100_000).cap(vcpus: 1) == (try ExecutionCap(percent: 1)))
        #expect(CPUBandwidth(quotaMicroseconds: 400_000, periodMicroseconds: 100_000).cap(vcpus: 2) == .unlimited)
        #expect(CPUBandwidth(quotaMicroseconds: 24_600, periodMicroseconds: 100_000).cap(vcpus: 1) == (try ExecutionCap(percent: 25)))
    }
}
