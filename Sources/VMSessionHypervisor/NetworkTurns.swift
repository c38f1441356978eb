import Synchronization
import VMSessionCore

/// Who may touch a remote session's network helpers now: the starts (a start, a warm restore, a template's
/// capture, a revert that restarts QEMU: each brings the helpers up or needs them to stay) or the release after its
/// VM stopped on its own (which takes them down). Why: the release is an SSH command that runs while the session's
/// next start may already be bringing the same helpers up; a release that ran under a start would leave its new
/// QEMU without a network. So a release is skipped while a start is in flight, and a start that comes during a
/// release waits for it to end (a continuation, resumed outside the lock; nothing is awaited under it).
final class NetworkTurns: Sendable {
    private struct Turn {
        var starts = 0
        var releasing = false
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let turns = Mutex<[SessionID: Turn]>([:])

    /// A start of `id` begins: after a release in flight ends, if there is one. Pair with ``endStart(_:)``.
    func beginStart(_ id: SessionID) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = turns.withLock { turns -> Bool in
                var turn = turns[id] ?? Turn()
                defer { turns[id] = turn }
                if turn.releasing {
                    turn.waiting.append(continuation)
                    return false
                }
                turn.starts += 1
                return true
            }
            if now { continuation.resume() }
        }
    }

    func endStart(_ id: SessionID) {
        turns.withLock { turns in
            guard var turn = turns[id] else { return }
            turn.starts = max(0, turn.starts - 1)
            turns[id] = turn.starts == 0 && !turn.releasing ? nil : turn
        }
    }

    /// Whether a release of `id` may go ahead now (no start in flight, no other release); if so, pair with
    /// ``endRelease(_:)``.
    func beginRelease(_ id: SessionID) -> Bool {
        turns.withLock { turns in
            var turn = turns[id] ?? Turn()
            guard turn.starts == 0, !turn.releasing else { return false }
            turn.releasing = true
            turns[id] = turn
            return true
        }
    }

    /// The release of `id` ended: the starts that waited for it go ahead.
    func endRelease(_ id: SessionID) {
        let waiting = turns.withLock { turns -> [CheckedContinuation<Void, Never>] in
            guard var turn = turns[id] else { return [] }
            let waiting = turn.waiting
            turn.releasing = false
            turn.waiting = []
            turn.starts += waiting.count
            turns[id] = turn.starts == 0 ? nil : turn
            return waiting
        }
        for continuation in waiting { continuation.resume() }
    }

    /// Whether a start of `id` is in flight (for tests and logs).
    func isStarting(_ id: SessionID) -> Bool { turns.withLock { ($0[id]?.starts ?? 0) > 0 } }
}
