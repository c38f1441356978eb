/// What a page asks for when it opens a session (the plugin's `open({cpus, memory, disk, version})`),
/// with the bounds the daemon enforces before anything reaches the hypervisor.
public struct Requirements: Codable, Equatable, Sendable {
    public var cpus: Int
    /// Memory in MiB.
    public var memory: Int
    /// Scratch disk size in MiB.
    public var disk: Int
    /// The image to boot, by name (`appliance` is the built-in test guest).
    public var version: String

    public static let cpuRange = 1...16
    public static let memoryRange = 64...65_536
    public static let diskRange = 16...1_048_576
    public static let defaults = Requirements(cpus: 1, memory: 256, disk: 1024, version: "appliance")

    public init(cpus: Int, memory: Int, disk: Int, version: String) {
        self.cpus = cpus
        self.memory = memory
        self.disk = disk
        self.version = version
    }

    /// Checks every field and throws `invalid_argument` naming the first one out of bounds.
    public func validate() throws(VMSessionError) {
        try Self.check("cpus", cpus, in: Self.cpuRange, unit: "")
        try Self.check("memory", memory, in: Self.memoryRange, unit: " MiB")
        try Self.check("disk", disk, in: Self.diskRange, unit: " MiB")
        guard Identifier.isValid(version, maxLength: 64) else {
            throw VMSessionError(.invalidArgument, "'version' must be 1 to 64 letters, digits, '.', '_' or '-'.")
        }
    }

    private static func check(_ field: String, _ value: Int, in range: ClosedRange<Int>, unit: String) throws(VMSessionError) {
        guard range.contains(value) else {
            throw VMSessionError(
                .invalidArgument,
                "'\(field)' must be between \(range.lowerBound) and \(range.upperBound)\(unit); got \(value).")
        }
    }
}
