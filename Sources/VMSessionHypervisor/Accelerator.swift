import Foundation

/// How guests execute: hardware virtualization (`kvm`), emulation (`tcg`), or whichever the host
/// allows (`auto`: KVM when /dev/kvm is usable).
public enum Accelerator: String, Codable, Sendable, CaseIterable {
    case auto, kvm, tcg

    /// The accelerator actually used on this host.
    public func resolved() -> Accelerator {
        switch self {
        case .auto: FileManager.default.isWritableFile(atPath: "/dev/kvm") ? .kvm : .tcg
        case .kvm, .tcg: self
        }
    }

    /// libvirt's domain type for it.
    var domainType: String { resolved() == .kvm ? "kvm" : "qemu" }
}
