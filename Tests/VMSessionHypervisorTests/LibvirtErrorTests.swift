import Libvirt
import Testing

/// libvirt keeps its last error per thread and every public call clears it first, naming the object included.
@Suite("libvirt's errors on test:///default")
struct LibvirtErrorTests {
    @Test("a failed call on a named pool keeps libvirt's own message and code, not 'unknown libvirt error'")
    func failureKeepsLibvirtsMessage() throws {
        let connection = try Connection(uri: "test:///default")
        let pool = try #require(try connection.storagePool(named: "default-pool"), "the test driver's pool")
        #expect(pool.isActive)
        do {
            try pool.start()  // already active
            Issue.record("starting an active pool succeeded")
        } catch {
            #expect(error.message.contains("is active"), "\(error)")
            #expect(error.isInvalidOperation, "\(error)")
            #expect(error.operation == "virStoragePoolCreate(default-pool)", "\(error)")
        }
    }
}
