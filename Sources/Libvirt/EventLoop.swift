import CLibvirt
import Foundation
import Synchronization

/// libvirt's default event loop, run on a thread of its own.
///
/// libvirt delivers domain events (and, for the embedded QEMU driver, does its monitor I/O) only while
/// some thread runs `virEventRunDefaultImpl`. It must be registered before the first connection is
/// opened, once per process; ``shared`` does both.
public final class EventLoop: Sendable {
    /// The process-wide loop, started on first use.
    public static let shared = EventLoop()

    private let started = Mutex(false)

    private init() {}

    /// Registers libvirt's default event implementation and starts the thread that runs it.
    /// Safe to call any number of times. The thread lives as long as the process.
    public func start() throws(LibvirtError) {
        // Registration happens under the lock, so that a concurrent caller cannot open a connection before the
        // default implementation is registered (libvirt then fails with "could not initialize domain event timer").
        try started.withLock { (value: inout Bool) throws(LibvirtError) in
            if value { return }
            // Silence libvirt's default handler that prints every error to stderr; we report errors ourselves.
            virSetErrorFunc(nil) { _, _ in }
            guard virEventRegisterDefaultImpl() == 0 else { throw LibvirtError.last("virEventRegisterDefaultImpl") }
            let thread = Thread {
                while true {
                    if virEventRunDefaultImpl() < 0 {
                        // A failing iteration is not fatal to libvirt; back off briefly so it cannot spin.
                        Thread.sleep(forTimeInterval: 0.01)
                    }
                }
            }
            thread.name = "libvirt-event-loop"
            thread.start()
            value = true
        }
    }
}
