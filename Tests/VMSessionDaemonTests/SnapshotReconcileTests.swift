import Foundation
import Logging
import Testing
import VMSessionCore
@testable import VMSessionDaemon
import VMSessionStore
import VMSessionTestSupport

/// What a daemon killed in the middle of a snapshot left, settled at the next start against the hypervisor.
@Suite("Snapshot reconciliation after an interrupted run")
struct SnapshotReconcileTests {
    typealias Fixture = SessionManagerRaceTests.Fixture

    static func record(_ name: String, of id: SessionID, _ status: StoredSnapshot.Status) -> StoredSnapshot {
        StoredSnapshot(
            session: id, client: "local", snapshot: VMSnapshot(name: name, createdAt: Date(), state: .running, bytes: 0), status: status)
    }

    @Test("a snapshot left 'creating' is kept if libvirt has it and dropped if not; one left 'deleting' is deleted in both")
    func settlesHalfDoneSnapshots() async throws {
        let fixture = try Fixture()
        let id = try fixture.session(.running)
        await fixture.hypervisor.set(id, to: .running, announce: false)
        await fixture.hypervisor.addSnapshot("made", of: id)
        await fixture.hypervisor.addSnapshot("going", of: id)
        await fixture.hypervisor.addSnapshot("kept", of: id)
        for stored in [
            Self.record("made", of: id, .creating), Self.record("never-made", of: id, .creating),
            Self.record("going", of: id, .deleting), Self.record("kept", of: id, .ready),
        ] {
            try fixture.store.save(stored)
        }
        let manager = fixture.manager()
        try await manager.reconcile()
        try await SnapshotService(manager: manager).reconcile()

        let left = try fixture.store.snapshots(of: id)
        #expect(Set(left.map(\.snapshot.name)) == ["made", "kept"])
        #expect(left.allSatisfy { $0.status == .ready })
        #expect(Set(try await fixture.hypervisor.snapshotNames(of: id)) == ["made", "kept"])
        let kinds = try fixture.store.events(for: id, after: 0).map(\.kind)
        #expect(kinds.contains(.snapshotCreated) && kinds.contains(.snapshotDeleted))
        #expect(try await SnapshotService(manager: manager).list(id).map(\.name).sorted() == ["kept", "made"])
    }
}
