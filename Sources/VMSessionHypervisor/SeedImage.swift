import Foundation
import VMSessionContext
import VMSessionCore

/// Writes a ``ContextSeed`` as an ISO 9660 image (Joliet + Rock Ridge) with xorriso, Debian's ISO tool.
enum SeedImage {
    static func write(_ seed: ContextSeed, to isoPath: String, scratch: String) async throws(VMSessionError) {
        let manager = FileManager.default
        do {
            try? manager.removeItem(atPath: scratch)
            try manager.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            for (name, contents) in seed.files {
                guard Identifier.isValid(name, maxLength: 64) else {
                    throw VMSessionError(.invalidArgument, "'\(name)' is not a valid seed file name.")
                }
                try Data(contents).write(to: URL(fileURLWithPath: scratch + "/" + name))
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
    }
}
