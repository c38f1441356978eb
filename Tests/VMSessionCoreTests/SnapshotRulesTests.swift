import Foundation
import Testing
import VMSessionCore

/// Snapshot names, the snapshot quota, and a revert's target state: pure rules, checked with no I/O.
@Suite("Snapshot rules")
struct SnapshotRulesTests {
    @Test("a snapshot name is 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'")
    func names() {
        for good in ["a", "before-upgrade", "v1.2_3", String(repeating: "x", count: 64)] {
            #expect(throws: Never.self) { try VMSnapshot.validate(name: good) }
        }
        for bad in ["", ".", "..", "-x", ".hidden", "a/b", "a b", "<x>", "a'b", "é", String(repeating: "x", count: 65)] {
            #expect {
                try VMSnapshot.validate(name: bad)
            } throws: { error in
                (error as? VMSessionError)?.code == .invalidArgument
            }
        }
    }

    static let limits = SessionQuota.SnapshotLimits(perSession: 2, perClient: 3, mebibytesPerSession: 1024, mebibytesPerClient: 1536)
    static var quota: SessionQuota {
        var quota = SessionQuota.defaults
        quota.snapshots = limits
        return quota
    }

    func holdings(_ id: SessionID, _ client: String, count: Int, mebibytes: Int64 = 100) -> [SessionQuota.SnapshotHolding] {
        (0..<count).map { _ in .init(session: id, client: client, bytes: mebibytes << 20) }
    }

    @Test("a session may take snapshots up to its count, and the next is refused with insufficient_resources")
    func countPerSession() throws {
        let id = SessionID()
        try Self.quota.checkSnapshot(of: id, by: "local", memoryMiB: 256, existing: holdings(id, "local", count: 1))
        #expect {
            try Self.quota.checkSnapshot(of: id, by: "local", memoryMiB: 256, existing: holdings(id, "local", count: 2))
        } throws: { error in
            let error = error as? VMSessionError
            return error?.code == .insufficientResources && error?.message.contains("limits.snapshotsPerSession") == true
        }
    }

    @Test("an origin's snapshots across its sessions count against its own limit, not another origin's")
    func countPerClient() throws {
        let (a, b, c) = (SessionID(), SessionID(), SessionID())
        let page = "https://app.example"
        let existing = holdings(a, page, count: 2) + holdings(b, page, count: 1) + holdings(SessionID(), "local", count: 2)
        #expect {
            try Self.quota.checkSnapshot(of: c, by: page, memoryMiB: 64, existing: existing)
        } throws: { error in
            (error as? VMSessionError)?.message.contains("limits.snapshotsPerOrigin") == true
        }
        try Self.quota.checkSnapshot(of: c, by: "https://other.example", memoryMiB: 64, existing: existing)
    }

    @Test("bytes: the VM's memory is counted for the snapshot to come, per session and per origin")
    func bytes() throws {
        let id = SessionID()
        // 1 × 900 MiB held + 256 MiB asked > 1024 MiB per session.
        #expect {
            try Self.quota.checkSnapshot(of: id, by: "local", memoryMiB: 256, existing: holdings(id, "local", count: 1, mebibytes: 900))
        } throws: { error in
            (error as? VMSessionError)?.message.contains("limits.snapshotMiBPerSession") == true
        }
        try Self.quota.checkSnapshot(of: id, by: "local", memoryMiB: 124, existing: holdings(id, "local", count: 1, mebibytes: 900))
        // Another session of the same origin holds 1400 MiB: 1400 + 256 > 1536 per origin.
        let other = holdings(SessionID(), "local", count: 1, mebibytes: 1400)
        #expect {
            try Self.quota.checkSnapshot(of: id, by: "local", memoryMiB: 256, existing: other)
        } throws: { error in
            (error as? VMSessionError)?.message.contains("limits.snapshotMiBPerOrigin") == true
        }
    }

    @Test("a revert reaches the state its snapshot was taken in; nothing else can choose its target")
    func revertTarget() throws {
        var lifecycle = SessionLifecycle(state: .running)
        let revert = try lifecycle.request(.revert, reaching: .paused)
        #expect(revert.during == .running && revert.onSuccess == .paused && revert.onFailure == .error)
        #expect(lifecycle.complete(succeeded: true, reason: "reverted") == .init(from: .running, to: .paused, reason: "reverted"))

        var pausedOne = SessionLifecycle(state: .paused)
        #expect(try pausedOne.request(.revert, reaching: .running).onSuccess == .running)
        // Another action's target, or a revert to a state no snapshot holds, is the table's.
        var other = SessionLifecycle(state: .running)
        #expect(try other.request(.snapshot, reaching: .paused).onSuccess == .running)
        var odd = SessionLifecycle(state: .running)
        #expect(try odd.request(.revert, reaching: .saved).onSuccess == .running)
    }

    @Test("snapshot and template actions are asked for under routes of their own; the others keep theirs")
    func routes() {
        #expect(SessionAction.allCases.filter(\.isSnapshotAction) == [.snapshot, .revert, .deleteSnapshot, .makeTemplate])
        #expect(SessionAction.snapshot.isLong && SessionAction.revert.isLong && !SessionAction.deleteSnapshot.isLong)
    }
}
