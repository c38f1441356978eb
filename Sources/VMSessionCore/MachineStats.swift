/// A VM's use of CPU, memory, disk and network as its hypervisor counts it (libvirt's bulk statistics), in
/// base units. It exists for the daemon's metrics: each field is nil (or a list empty) when the hypervisor
/// does not report it (a driver without QEMU, a VM that does not run, a guest without a balloon driver).
public struct MachineStats: Equatable, Sendable {
    /// CPU time of all the VM's threads, and of its vCPUs in guest user and kernel mode, in seconds.
    public var cpuSeconds: Double?
    public var cpuUserSeconds: Double?
    public var cpuSystemSeconds: Double?
    /// vCPUs the VM has now.
    public var virtualCPUs: Int?
    /// The memory the VM may have, has now (the balloon's size), and the resident set of its process, in bytes.
    public var memoryMaximumBytes: Double?
    public var memoryCurrentBytes: Double?
    public var memoryResidentBytes: Double?
    /// What the guest itself reports through its balloon driver, in bytes.
    public var memoryUsableBytes: Double?
    public var memoryAvailableBytes: Double?
    public var disks: [Disk]
    public var interfaces: [Interface]

    /// A disk: the guest's device name (`vda`, `sda`) and its traffic since the VM's process started.
    public struct Disk: Equatable, Sendable {
        public var device: String
        public var readBytes: Double?
        public var writeBytes: Double?
        public var readRequests: Double?
        public var writeRequests: Double?
        public var readSeconds: Double?
        public var writeSeconds: Double?
        public var flushRequests: Double?
        public var capacityBytes: Double?
        public var allocationBytes: Double?
        public var physicalBytes: Double?

        public init(device: String) { self.device = device }
    }

    /// A network card: the host side's name and its traffic since the VM's process started.
    public struct Interface: Equatable, Sendable {
        public var device: String
        public var receiveBytes: Double?
        public var receivePackets: Double?
        public var receiveErrors: Double?
        public var receiveDrops: Double?
        public var transmitBytes: Double?
        public var transmitPackets: Double?
        public var transmitErrors: Double?
        public var transmitDrops: Double?

        public init(device: String) { self.device = device }
    }

    public init() {
        disks = []
        interfaces = []
    }

    /// Reads libvirt's field names (`cpu.time`, `balloon.rss`, `block.<n>.rd.bytes`, `net.<n>.tx.pkts`, …, as in
    /// `virConnectGetAllDomainStats`'s documentation) into base units: nanoseconds become seconds, KiB bytes.
    public init(libvirtFields fields: [String: Double], names: [String: String] = [:]) {
        self.init()
        let nanoseconds = 1e-9
        cpuSeconds = fields["cpu.time"].map { $0 * nanoseconds }
        cpuUserSeconds = fields["cpu.user"].map { $0 * nanoseconds }
        cpuSystemSeconds = fields["cpu.system"].map { $0 * nanoseconds }
        virtualCPUs = fields["vcpu.current"].map { Int($0) }
        memoryMaximumBytes = fields["balloon.maximum"].map { $0 * 1024 }
        memoryCurrentBytes = fields["balloon.current"].map { $0 * 1024 }
        memoryResidentBytes = fields["balloon.rss"].map { $0 * 1024 }
        memoryUsableBytes = fields["balloon.usable"].map { $0 * 1024 }
        memoryAvailableBytes = fields["balloon.available"].map { $0 * 1024 }
        for index in 0..<Int(fields["block.count"] ?? 0) {
            let key = "block.\(index)."
            var disk = Disk(device: names[key + "name"] ?? "\(index)")
            disk.readBytes = fields[key + "rd.bytes"]
            disk.writeBytes = fields[key + "wr.bytes"]
            disk.readRequests = fields[key + "rd.reqs"]
            disk.writeRequests = fields[key + "wr.reqs"]
            disk.readSeconds = fields[key + "rd.times"].map { $0 * nanoseconds }
            disk.writeSeconds = fields[key + "wr.times"].map { $0 * nanoseconds }
            disk.flushRequests = fields[key + "fl.reqs"]
            disk.capacityBytes = fields[key + "capacity"]
            disk.allocationBytes = fields[key + "allocation"]
            disk.physicalBytes = fields[key + "physical"]
            disks.append(disk)
        }
        for index in 0..<Int(fields["net.count"] ?? 0) {
            let key = "net.\(index)."
            var card = Interface(device: names[key + "name"] ?? "\(index)")
            card.receiveBytes = fields[key + "rx.bytes"]
            card.receivePackets = fields[key + "rx.pkts"]
            card.receiveErrors = fields[key + "rx.errs"]
            card.receiveDrops = fields[key + "rx.drop"]
            card.transmitBytes = fields[key + "tx.bytes"]
            card.transmitPackets = fields[key + "tx.pkts"]
            card.transmitErrors = fields[key + "tx.errs"]
            card.transmitDrops = fields[key + "tx.drop"]
            interfaces.append(card)
        }
    }
}
