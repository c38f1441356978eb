import Foundation
import Testing
import VMSessionCore
@testable import VMSessionHypervisor

/// The turns of a remote session's network: the release of a stopped VM's helpers never runs under a start, and a
/// start that comes during a release goes ahead only once it ended.
@Suite("Network turns")
struct NetworkTurnsTests {
    let id = SessionID()

    @Test("a release is refused while a start is in flight, and allowed once it ended")
    func releaseSkippedUnderAStart() async {
        let turns = NetworkTurns()
        await turns.beginStart(id)
        #expect(!turns.beginRelease(id))
        turns.endStart(id)
        #expect(turns.beginRelease(id))
        turns.endRelease(id)
        #expect(!turns.isStarting(id))
    }

    @Test("a second release of the same session is refused while the first runs; another session's is not")
    func oneReleaseAtATime() {
        let turns = NetworkTurns()
        #expect(turns.beginRelease(id))
        #expect(!turns.beginRelease(id))
        #expect(turns.beginRelease(SessionID()))
        turns.endRelease(id)
        #expect(turns.beginRelease(id))
    }

    @Test("a start that comes during a release waits for its end, then counts as in flight")
    func startWaitsForARelease() async {
        let turns = NetworkTurns()
        #expect(turns.beginRelease(id))
        let id = id
        let (began, beganContinuation) = AsyncStream<Void>.makeStream()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await turns.beginStart(id)
                beganContinuation.yield()
                beganContinuation.finish()
            }
            // The start is waiting: it has not begun, and no start counts yet.
            try? await Task.sleep(for: .milliseconds(100))
            #expect(!turns.isStarting(id))
            turns.endRelease(id)
            var iterator = began.makeAsyncIterator()
            _ = await iterator.next()
            #expect(turns.isStarting(id))
            #expect(!turns.beginRelease(id), "no release under the start that waited")
            await group.waitForAll()
        }
        turns.endStart(id)
        #expect(!turns.isStarting(id))
    }
}
