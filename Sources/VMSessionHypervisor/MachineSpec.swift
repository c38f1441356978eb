import VMSessionContext
import VMSessionCore

/// Everything needed to define one session's VM.
public struct MachineSpec: Equatable, Sendable {
    public var id: SessionID
    public var sessionName: String
    public var cpus: Int
    public var memoryMiB: Int
    public var diskMiB: Int
    public var image: MachineImage
    /// Contextualization for the guest, attached as a read-only disk; nil for none.
    public var seed: ContextSeed?
    /// What the guest may reach on the network (see ``GuestNetwork``); nil for a VM with no network card.
    public var egress: EgressPolicy?
    /// The guest's port that serves its API.
    public static let guestAPIPort = 80

    public init(
        id: SessionID, sessionName: String, requirements: Requirements, image: MachineImage, seed: ContextSeed? = nil,
        egress: EgressPolicy? = nil
    ) {
        self.egress = egress
        self.id = id
        self.sessionName = sessionName
        self.cpus = requirements.cpus
        self.memoryMiB = requirements.memory
        self.diskMiB = requirements.disk
        self.image = image
        self.seed = seed
    }
}

/// What a VM boots.
public enum MachineImage: Equatable, Sendable {
    /// A kernel and initramfs booted directly (the test appliance); the scratch disk is blank.
    case kernel(kernelPath: String, initrdPath: String, commandLine: String)
    /// A bootable disk image; the session's disk is a qcow2 overlay on it, never a copy.
    case disk(path: String, format: String)
}
