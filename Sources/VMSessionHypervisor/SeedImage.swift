import Foundation
import VMSessionContext
import VMSessionCore

/// Writes a ``ContextSeed`` as an ISO 9660 image (Joliet + Rock Ridge) with xorriso, Debian's ISO tool.
///
/// Every seed is padded (sparsely) to ``paddedBytes``: a VM restored from a template keeps the size its guest
/// read from the template's seed drive, and finds the session's own seed in that drive's place (see
/// ``LibvirtHypervisor/restoreTemplate(_:for:source:)``), so every seed must fit the same size.
enum SeedImage {
    /// More than any seed takes (user-data is at most 1 MiB).
    static let paddedBytes: off_t = 4 << 20

    static func write(_ seed: ContextSeed, to isoPath: String, scratch: String) async throws(VMSessionError) {
        let manager = FileManager.default
        do {
            try? manager.removeItem(atPath: scratch)
            try manager.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            for (path, contents) in seed.files {
                let components = path.split(separator: "/", omittingEmptySubsequences: false)
                guard !components.isEmpty, components.allSatisfy({ Identifier.isValid(String($0), maxLength: 64) }) else {
                    throw VMSessionError(.invalidArgument, "'\(path)' is not a valid seed file path.")
                }
                let file = URL(fileURLWithPath: scratch + "/" + path)
                try manager.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(contents).write(to: file)
            }
        } catch let error as VMSessionError {
            throw error
        } catch {
            throw VMSessionError(.ioError, "Cannot write the contextualization files.", cause: error)
        }
        defer { try? manager.removeItem(atPath: scratch) }
        try? manager.removeItem(atPath: isoPath)
        try await ExternalCommand.run(
            "xorriso", ["-as", "mkisofs", "-quiet", "-volid", seed.volumeID, "-joliet", "-rock", "-output", isoPath, scratch])
        var info = stat()
        guard stat(isoPath, &info) == 0, info.st_size <= paddedBytes, truncate(isoPath, paddedBytes) == 0 else {
            throw VMSessionError(.ioError, "The seed image \(isoPath) is missing or larger than \(paddedBytes) bytes.")
        }
    }
}
