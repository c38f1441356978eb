import VMSessionCore

/// The files of a contextualization seed and the volume label they go under: what a guest reads at boot
/// to configure itself. Built here as plain data; the hypervisor turns it into a disk.
public struct ContextSeed: Equatable, Sendable {
    /// The volume id the guest looks for (`cidata` for cloud-init's NoCloud source).
    public var volumeID: String
    /// File name (at the root of the volume) to contents.
    public var files: [String: [UInt8]]

    /// The largest user-data accepted, in bytes. cloud-init itself reads far more; the bound keeps a page
    /// from filling the disk through the API, and is reported, never silently applied.
    public static let maximumUserDataBytes = 1 << 20

    public init(volumeID: String, files: [String: [UInt8]]) {
        self.volumeID = volumeID
        self.files = files
    }

    /// A cloud-init NoCloud seed: `user-data` as given, and `meta-data` with the session's instance id and
    /// host name.
    public static func noCloud(userData: String, instanceID: String, hostname: String) throws(VMSessionError) -> ContextSeed {
        let bytes = Array(userData.utf8)
        guard bytes.count <= maximumUserDataBytes else {
            throw VMSessionError(
                .payloadTooLarge,
                "'userData' is \(bytes.count) bytes; the limit is \(maximumUserDataBytes) bytes.")
        }
        let metaData = "instance-id: \(instanceID)\nlocal-hostname: \(hostname)\n"
        return ContextSeed(volumeID: "cidata", files: ["user-data": bytes, "meta-data": Array(metaData.utf8)])
    }
}
