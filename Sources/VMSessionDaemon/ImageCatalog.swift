import Foundation
import VMSessionCore
import VMSessionHypervisor

/// Resolves the `version` a page opens a session with to an image the hypervisor can boot.
///
/// For now it knows the built-in test appliance (`appliance`): a kernel, an initramfs and a command line
/// in one directory, as `Contextualization/appliance/build.sh` writes them.
public struct ImageCatalog: Sendable {
    public var applianceDirectory: String

    public init(applianceDirectory: String) {
        self.applianceDirectory = applianceDirectory
    }

    public static let applianceVersion = "appliance"

    /// The versions that can be opened.
    public var versions: [String] { [Self.applianceVersion] }

    public func image(for version: String) throws(VMSessionError) -> MachineImage {
        guard version == Self.applianceVersion else {
            throw VMSessionError(
                .notFound, "There is no image for version '\(version)'; known versions: \(versions.joined(separator: ", ")).")
        }
        let kernel = applianceDirectory + "/vmlinuz"
        let initrd = applianceDirectory + "/initrd.img"
        let manager = FileManager.default
        guard manager.isReadableFile(atPath: kernel), manager.isReadableFile(atPath: initrd) else {
            throw VMSessionError(
                .notFound,
                "The appliance image is not built in \(applianceDirectory); run `make appliance` (or set applianceDir).")
        }
        let commandLine = (try? String(contentsOfFile: applianceDirectory + "/cmdline", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "console=ttyS0"
        return .kernel(kernelPath: kernel, initrdPath: initrd, commandLine: commandLine)
    }
}
