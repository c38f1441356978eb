import Foundation
import VMSessionCore

/// The files of a contextualization seed and the volume label they go under: what a guest reads at boot
/// to configure itself. Built here as plain data; the hypervisor turns it into a disk.
public struct ContextSeed: Equatable, Sendable {
    /// The volume id the guest looks for (`cidata` for cloud-init's NoCloud source).
    public var volumeID: String
    /// File name (at the root of the volume) to contents.
    public var files: [String: [UInt8]]
    /// Written into the volume's primary descriptor (ISO 9660's volume set id): the instance-id, so that two
    /// seeds of different instances never have the same descriptor, which a guest restored from a template
    /// compares to see that its seed drive holds a new seed (two seeds of the same size made in the same
    /// second had identical ones).
    public var stamp: String?

    /// The largest user-data accepted, in bytes. cloud-init itself reads far more; the bound keeps a page
    /// from filling the disk through the API, and is reported, never silently applied.
    public static let maximumUserDataBytes = 1 << 20

    public init(volumeID: String, files: [String: [UInt8]], stamp: String? = nil) {
        self.volumeID = volumeID
        self.files = files
        self.stamp = stamp
    }

    /// The seed a guest reads at boot, in every layout the CernVM lineage used, on one volume labelled
    /// `cidata`:
    /// - cloud-init NoCloud: `user-data` and `meta-data` (instance id, host name) at the root;
    /// - amiconfig (CernVM): `context.sh` with `EC2_USER_DATA` (base64) and the instance id;
    /// - EC2 and OpenStack config-drive style: `ec2/latest/user-data`, `openstack/latest/user_data` and
    ///   `openstack/latest/meta_data.json`.
    ///
    /// `randomSeed` goes in as `random_seed`, the key cloud-init (NoCloud's `meta-data`) and OpenStack's
    /// `meta_data.json` use to hand a guest entropy from the host: a guest under TCG has no RDRAND and no
    /// hardware generator, and a guest restored from a template starts with the template's generator state,
    /// which it must leave before it makes a machine-id or a key (see the Debian guest's seed watch).
    public static func noCloud(
        userData: String, instanceID: String, hostname: String, randomSeed: [UInt8] = ContextSeed.randomSeed()
    ) throws(VMSessionError) -> ContextSeed {
        let bytes = Array(userData.utf8)
        guard bytes.count <= maximumUserDataBytes else {
            throw VMSessionError(
                .payloadTooLarge,
                "'userData' is \(bytes.count) bytes after filling in its parameters; the limit is \(maximumUserDataBytes) bytes.")
        }
        let seedText = Data(randomSeed).base64EncodedString()
        let metaData = "instance-id: \(instanceID)\nlocal-hostname: \(hostname)\nrandom_seed: \"\(seedText)\"\n"
        let contextScript = """
            # Written by vmsessiond for amiconfig (CernVM): the user-data, base64-encoded.
            EC2_USER_DATA=\(Data(bytes).base64EncodedString())
            INSTANCE_ID=\(instanceID)
            HOSTNAME=\(hostname)

            """
        let openStackMeta = #"{"uuid":"\#(instanceID)","hostname":"\#(hostname)","name":"\#(hostname)","random_seed":"\#(seedText)"}"# + "\n"
        return ContextSeed(
            volumeID: "cidata",
            files: [
                "user-data": bytes, "meta-data": Array(metaData.utf8), "context.sh": Array(contextScript.utf8),
                "ec2/latest/user-data": bytes, "openstack/latest/user_data": bytes,
                "openstack/latest/meta_data.json": Array(openStackMeta.utf8),
            ], stamp: instanceID)
    }

    /// 64 bytes from the system's generator: a fresh `random_seed` for each seed.
    public static func randomSeed() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<64).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}
