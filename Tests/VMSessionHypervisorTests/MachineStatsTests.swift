import Dispatch
import Foundation
import Libvirt
import Logging
import Testing
import VMSessionCore
@testable import VMSessionHypervisor

/// libvirt's bulk statistics (`virConnectGetAllDomainStats`) as the metrics read them.
@Suite("Machine statistics")
struct MachineStatsTests {
    @Test("libvirt's field names become base units: nanoseconds seconds, KiB bytes, one disk and card per index")
    func fieldsInBaseUnits() {
        let stats = LibvirtHypervisor.machineStats([
            "cpu.time": .uint(2_500_000_000), "cpu.user": .uint(1_000_000_000), "vcpu.current": .uint(2),
            "balloon.maximum": .uint(262_144), "balloon.rss": .uint(1024),
            "block.count": .uint(1), "block.0.name": .string("vda"), "block.0.rd.bytes": .uint(4096), "block.0.wr.times": .uint(500_000_000),
            "block.0.capacity": .uint(67_108_864),
            "net.count": .uint(1), "net.0.name": .string("tap0"), "net.0.rx.bytes": .uint(10), "net.0.tx.pkts": .uint(3),
            "state.state": .int(1),
        ])
        #expect(stats.cpuSeconds == 2.5)
        #expect(stats.cpuUserSeconds == 1)
        #expect(stats.cpuSystemSeconds == nil)
        #expect(stats.virtualCPUs == 2)
        #expect(stats.memoryMaximumBytes.map { Int($0) } == 256 << 20)
        #expect(stats.memoryResidentBytes.map { Int($0) } == 1 << 20)
        #expect(stats.disks.map(\.device) == ["vda"])
        #expect(stats.disks.first?.readBytes == 4096)
        #expect(stats.disks.first?.writeSeconds == 0.5)
        #expect(stats.disks.first?.capacityBytes == 67_108_864)
        #expect(stats.interfaces.map(\.device) == ["tap0"])
        #expect(stats.interfaces.first?.receiveBytes == 10)
        #expect(stats.interfaces.first?.transmitPackets == 3)
    }

    @Test("the test driver answers the bulk call for a session's running VM, and leaves it out once it is removed")
    func testDriverAnswers() async throws {
        let fixture = try LibvirtHypervisorTests.Fixture()
        let id = SessionID()
        try await fixture.hypervisor.define(fixture.spec(id))
        try await fixture.hypervisor.start(id)
        let stats = try await fixture.hypervisor.machineStats()
        // test:///default is one driver for the whole process: other tests' VMs may be there too.
        #expect(stats[id] != nil)
        try await fixture.hypervisor.remove(id)
        #expect(try await fixture.hypervisor.machineStats()[id] == nil)
    }

    @Test("a caller that stops waiting for a libvirt call that hangs gets control back at once, and no second call piles up behind it")
    func abandonedCallReturns() async throws {
        let fixture = try LibvirtHypervisorTests.Fixture()
        let hypervisor = fixture.hypervisor
        let stuck = DispatchSemaphore(value: 0)
        let waiting = Task { try await hypervisor.abandonableCall { stuck.wait() } }
        try await Task.sleep(for: .milliseconds(100))
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        stuck.signal()

        // While a statistics call is inside libvirt, another is refused at once instead of queueing.
        #expect(fixture.hypervisor.statsInFlight.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged)
        await #expect(throws: VMSessionError.self) { try await fixture.hypervisor.machineStats() }
        fixture.hypervisor.statsInFlight.store(false, ordering: .relaxed)
        #expect(try await fixture.hypervisor.machineStats().isEmpty)
    }
}
