import CLibvirt

/// Saving a running domain's memory to a file of the caller's choosing, and starting a domain from such a
/// file (what templates are made of). Every method is a blocking libvirt call.
extension Domain {
    /// Saves the domain's memory and device state to `path` and stops it (`virDomainSave`).
    public func save(to path: String) throws(LibvirtError) {
        guard virDomainSave(pointer, path) == 0 else { throw LibvirtError.last("virDomainSave") }
    }
}

extension Connection {
    /// Starts the domain saved in `path` (`virDomainRestore`), running, as the XML in the file's header
    /// describes it (its name, uuid, disks and sockets).
    public func restoreDomain(from path: String) throws(LibvirtError) {
        guard virDomainRestore(pointer, path) == 0 else { throw LibvirtError.last("virDomainRestore") }
    }
}
