import Foundation

/// A directory of its own under the system's temporary directory, removed with all it holds when the last
/// reference to it goes: the one way the tests make scratch space, so that a fixture that holds one tears down
/// every file it made there, whichever way its test ends.
public final class TemporaryDirectory: Sendable {
    public let path: String

    /// A new, empty directory named `<prefix>-<8 random hex digits>`.
    public init(_ prefix: String) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// An appliance of empty files in `<path>/appliance`, for hypervisors that never boot it (libvirt's test
    /// driver, ``ScriptedHypervisor``); returns its directory.
    @discardableResult
    public func standInAppliance() throws -> String {
        let appliance = path + "/appliance"
        try Self.makeStandInAppliance(in: appliance)
        return appliance
    }

    /// Empty `vmlinuz` and `initrd.img` in `directory` (made if missing): what the image catalog looks for.
    public static func makeStandInAppliance(in directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for file in ["vmlinuz", "initrd.img"] { FileManager.default.createFile(atPath: "\(directory)/\(file)", contents: Data([0])) }
    }
}
