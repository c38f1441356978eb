import Foundation
import VMSessionCore

/// An exclusive lock on the state directory: libvirt's embedded driver and the database allow one daemon
/// per directory, and a second one should say so plainly instead of failing somewhere inside libvirt.
final class StateDirectoryLock {
    private let descriptor: Int32

    init(directory: String) throws {
        let path = directory + "/vmsessiond.lock"
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw VMSessionError(.ioError, "Cannot open \(path).") }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            throw VMSessionError(.unavailable, "Another vmsessiond is already using the state directory \(directory).")
        }
    }

    func release() {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
