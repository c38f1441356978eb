import Foundation
import VMSessionCore

/// Checks that a disk image is self-contained before sessions boot from it. A qcow2 file can name other
/// files that QEMU then opens on the host (a backing file, an external data file): an image fetched from
/// the web could point its guest at `/etc/shadow`. The SHA-256 proves the file is the one the user chose,
/// not that it is harmless, so every image is also read with `qemu-img info` and refused if it refers
/// to anything outside itself.
public enum DiskImageInspector {
    public static func checkSelfContained(_ path: String) async throws(VMSessionError) {
        let text = try await ExternalCommand.output(of: "qemu-img", ["info", "--output=json", path])
        guard let info = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
            throw VMSessionError(.notValidated, "\(path) could not be read as a disk image.")
        }
        if let backing = info["backing-filename"] as? String {
            throw VMSessionError(
                .notValidated, "The image names a backing file (\(backing)); only self-contained images are accepted.")
        }
        let specific = (info["format-specific"] as? [String: Any])?["data"] as? [String: Any]
        if let dataFile = specific?["data-file"] as? String {
            throw VMSessionError(
                .notValidated, "The image keeps its data in another file (\(dataFile)); only self-contained images are accepted.")
        }
    }

    /// The size of the disk the image holds, in bytes (`qemu-img info`'s `virtual-size`). A session's overlay
    /// is never made smaller than this: an overlay shorter than its image cuts the guest's disk (and file
    /// systems) short, whatever `open`'s `disk` asked for.
    public static func virtualSize(_ path: String) async throws(VMSessionError) -> Int64 {
        let text = try await ExternalCommand.output(of: "qemu-img", ["info", "--output=json", path])
        guard let info = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any],
            let size = (info["virtual-size"] as? NSNumber)?.int64Value
        else {
            throw VMSessionError(.notValidated, "\(path) could not be read as a disk image.")
        }
        return size
    }
}
