import Foundation
import VMSessionContext
import VMSessionCore

/// Writes a ``ContextSeed`` as an ISO 9660 image (Joliet + Rock Ridge) with genisoimage (cdrkit).
///
/// Not xorriso: libisoburn waits for its writer thread in steps of 100 ms, so every seed took at least 0.1 s
/// and, on a loaded machine, up to about 1 s (strace: `clock_nanosleep` of 100 ms, again and again), which sat
/// in every start, warm or cold; genisoimage writes the same seed in about 10 ms. Both are Debian packages.
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
        // Made beside the seed and renamed over it: a daemon killed while it writes leaves the old seed whole,
        // never none, so the VM's next start finds the drive its XML names.
        let newPath = isoPath + ".new"
        try? manager.removeItem(atPath: newPath)
        let stamp = seed.stamp.map { ["-volset", $0] } ?? []
        try await ExternalCommand.run(
            "genisoimage", ["-quiet", "-V", seed.volumeID] + stamp + ["-J", "-R", "-o", newPath, scratch])
        var info = stat()
        guard stat(newPath, &info) == 0, info.st_size <= paddedBytes, truncate(newPath, paddedBytes) == 0 else {
            try? manager.removeItem(atPath: newPath)
            throw VMSessionError(.ioError, "The seed image \(isoPath) is missing or larger than \(paddedBytes) bytes.")
        }
        guard rename(newPath, isoPath) == 0 else {
            let reason = String(cString: strerror(errno))
            try? manager.removeItem(atPath: newPath)
            throw VMSessionError(.ioError, "Cannot put the seed image in place at \(isoPath): \(reason).")
        }
    }
}
