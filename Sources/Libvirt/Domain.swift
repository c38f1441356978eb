import CLibvirt
import Foundation

/// A libvirt domain (a virtual machine), defined or running. Every method is a blocking libvirt call.
public final class Domain: @unchecked Sendable {
    let pointer: virDomainPtr

    init(_ pointer: virDomainPtr) {
        self.pointer = pointer
    }

    deinit {
        virDomainFree(pointer)
    }

    public var name: String {
        virDomainGetName(pointer).map { String(cString: $0) } ?? ""
    }

    /// Boots the domain, or restores it from its managed-save image when it has one.
    public func start() throws(LibvirtError) {
        guard virDomainCreate(pointer) == 0 else { throw LibvirtError.last("virDomainCreate") }
    }

    /// Stops the vCPUs; memory stays.
    public func suspend() throws(LibvirtError) {
        guard virDomainSuspend(pointer) == 0 else { throw LibvirtError.last("virDomainSuspend") }
    }

    public func resume() throws(LibvirtError) {
        guard virDomainResume(pointer) == 0 else { throw LibvirtError.last("virDomainResume") }
    }

    /// A hard reset, as the reset button of a real machine.
    public func reset() throws(LibvirtError) {
        guard virDomainReset(pointer, 0) == 0 else { throw LibvirtError.last("virDomainReset") }
    }

    /// Asks the guest to power off (ACPI power button); returns before the guest has done so.
    public func shutdown() throws(LibvirtError) {
        guard virDomainShutdown(pointer) == 0 else { throw LibvirtError.last("virDomainShutdown") }
    }

    /// Pulls the plug.
    public func destroy() throws(LibvirtError) {
        guard virDomainDestroy(pointer) == 0 else { throw LibvirtError.last("virDomainDestroy") }
    }

    /// Saves the memory to a libvirt-managed file and stops the domain; ``start()`` restores it.
    public func managedSave() throws(LibvirtError) {
        guard virDomainManagedSave(pointer, 0) == 0 else { throw LibvirtError.last("virDomainManagedSave") }
    }

    public func hasManagedSave() throws(LibvirtError) -> Bool {
        let result = virDomainHasManagedSaveImage(pointer, 0)
        guard result >= 0 else { throw LibvirtError.last("virDomainHasManagedSaveImage") }
        return result == 1
    }

    /// Deletes the managed-save image, if any (one left beside a running process would restore stale memory).
    public func removeManagedSave() throws(LibvirtError) {
        guard virDomainManagedSaveRemove(pointer, 0) == 0 else { throw LibvirtError.last("virDomainManagedSaveRemove") }
    }

    /// Removes the definition, together with any managed-save image and snapshot metadata.
    public func undefine() throws(LibvirtError) {
        let flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE.rawValue | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA.rawValue
        guard virDomainUndefineFlags(pointer, flags) == 0 else { throw LibvirtError.last("virDomainUndefineFlags") }
    }

    /// The domain's state and libvirt's reason for it.
    public func state() throws(LibvirtError) -> DomainState {
        var state: Int32 = 0
        var reason: Int32 = 0
        guard virDomainGetState(pointer, &state, &reason, 0) == 0 else { throw LibvirtError.last("virDomainGetState") }
        return DomainState(state: state, reason: reason)
    }

    /// CPU time used so far, in nanoseconds (all of the domain's threads).
    public func cpuTime() throws(LibvirtError) -> UInt64 {
        var info = virDomainInfo()
        guard virDomainGetInfo(pointer, &info) == 0 else { throw LibvirtError.last("virDomainGetInfo") }
        return UInt64(info.cpuTime)
    }

    /// How many vCPUs the domain has (now, if it runs).
    public func vcpuCount() throws(LibvirtError) -> Int {
        var info = virDomainInfo()
        guard virDomainGetInfo(pointer, &info) == 0 else { throw LibvirtError.last("virDomainGetInfo") }
        return Int(info.nrVirtCpu)
    }

    /// Sets the CPU bandwidth of every vCPU of the running domain: `quota` microseconds per `period`;
    /// a nil quota removes the limit.
    public func setVCPUBandwidth(periodMicroseconds period: UInt64, quotaMicroseconds quota: Int64?) throws(LibvirtError) {
        var params: virTypedParameterPtr?
        var count: Int32 = 0
        var capacity: Int32 = 0
        defer { virTypedParamsFree(params, count) }
        guard virTypedParamsAddULLong(&params, &count, &capacity, VIR_DOMAIN_SCHEDULER_VCPU_PERIOD, period) == 0,
            virTypedParamsAddLLong(&params, &count, &capacity, VIR_DOMAIN_SCHEDULER_VCPU_QUOTA, quota ?? -1) == 0
        else { throw LibvirtError.last("virTypedParamsAdd") }
        let flags = VIR_DOMAIN_AFFECT_LIVE.rawValue
        guard virDomainSetSchedulerParametersFlags(pointer, params, count, flags) == 0 else {
            throw LibvirtError.last("virDomainSetSchedulerParametersFlags")
        }
    }

    /// The running domain's vCPU bandwidth: (period, quota) in microseconds; a quota < 0 means no limit.
    public func vcpuBandwidth() throws(LibvirtError) -> (period: UInt64, quota: Int64) {
        var params = [virTypedParameter](repeating: virTypedParameter(), count: 16)
        var count: Int32 = Int32(params.count)
        let result = params.withUnsafeMutableBufferPointer { buffer in
            virDomainGetSchedulerParametersFlags(pointer, buffer.baseAddress, &count, VIR_DOMAIN_AFFECT_LIVE.rawValue)
        }
        guard result == 0 else { throw LibvirtError.last("virDomainGetSchedulerParametersFlags") }
        var period: UInt64 = 0
        var quota: Int64 = -1
        for param in params.prefix(Int(count)) {
            let field = withUnsafeBytes(of: param.field) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if field == VIR_DOMAIN_SCHEDULER_VCPU_PERIOD { period = param.value.ul }
            if field == VIR_DOMAIN_SCHEDULER_VCPU_QUOTA { quota = param.value.l }
        }
        return (period, quota)
    }
}
