import NIOCore
import NIOPosix
import Testing

@testable import VMSessionAPI

/// What serving a connection on its event loop rests on: a task that prefers the loop as its executor runs
/// its code there, after each suspension and in its child tasks (an event stream's heartbeat, a console's
/// input and output), and so does a default actor it calls (an actor with an executor of its own, as the
/// session manager has, keeps it).
@Suite("Connections served on their event loops")
struct EventLoopConnectionsTests {
    actor Plain {
        let loop: any EventLoop
        init(_ loop: any EventLoop) { self.loop = loop }
        func onLoop() -> Bool { loop.inEventLoop }
    }

    @Test("a task preferring an event loop runs there, after it awaited and in its child tasks; a default actor it calls runs there too")
    func runsOnItsLoop() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let seen = await withTaskExecutorPreference(EventLoopExecutor(loop)) {
            var seen = [loop.inEventLoop]
            try? await Task.sleep(for: .milliseconds(1))
            seen.append(loop.inEventLoop)
            seen.append(await withTaskGroup(of: Bool.self) { group in
                group.addTask { loop.inEventLoop }
                return await group.next() ?? false
            })
            seen.append(await Plain(loop).onLoop())
            return seen
        }
        #expect(seen == [true, true, true, true])
    }
}
