import Testing
import VMSessionCore

/// The order of an event stream's bytes (``EventStreamFlow``), without sockets: replay pages, live frames without
/// repeats, an end that waits for the replay, and a stream that cannot keep up closed.
@Suite("Event stream flow")
struct EventStreamFlowTests {
    typealias Flow = EventStreamFlow<String>

    /// The actions as text, to compare whole sequences.
    static func describe(_ actions: [Flow.Action]) -> [String] {
        actions.map { action in
            switch action {
            case .readPage(let after, let first): "read \(after)\(first ? " first" : "")"
            case .dropped(let after, let through): "dropped \(after)-\(through)"
            case .write(let frames): "write \(frames.joined(separator: ","))"
            case .startHeartbeat: "heartbeat"
            case .end: "end"
            case .close: "close"
            }
        }
    }

    static func frames(_ ids: ClosedRange<Int64>) -> [(id: Int64, frame: String)] { ids.map { ($0, "f\($0)") } }

    @Test("live only: frames are written as they come, none twice")
    func liveOnly() {
        var flow = Flow(since: nil, pageSize: 3, waitingLimit: 10)
        #expect(Self.describe(flow.live(Self.frames(1...1))) == [])
        #expect(Self.describe(flow.start()) == ["write f1", "heartbeat"])
        #expect(Self.describe(flow.live(Self.frames(1...3))) == ["write f2,f3"])
        #expect(Self.describe(flow.live(Self.frames(2...3))) == [])
        #expect(Self.describe(flow.end()) == ["end"])
        #expect(Self.describe(flow.live(Self.frames(4...4))) == [])
        #expect(flow.phase == .ended)
    }

    @Test("replay in pages, then the live frames that came meanwhile and were not replayed")
    func replayThenLive() {
        var flow = Flow(since: 2, pageSize: 3, waitingLimit: 10)
        #expect(Self.describe(flow.start()) == ["read 2 first"])
        #expect(Self.describe(flow.live(Self.frames(6...7))) == [])
        #expect(Self.describe(flow.pageRead(pruned: 4, page: Self.frames(5...7), writable: true)) == ["dropped 2-4", "write f5,f6,f7", "read 7"])
        #expect(Self.describe(flow.live(Self.frames(8...8))) == [])
        #expect(Self.describe(flow.pageRead(pruned: nil, page: Self.frames(8...8), writable: true)) == ["write f8", "heartbeat"])
        #expect(flow.lastSent == 8)
        #expect(Self.describe(flow.live(Self.frames(8...9))) == ["write f9"])
    }

    @Test("a full page on a connection that takes no more waits until it is writable")
    func pausedReplay() {
        var flow = Flow(since: 0, pageSize: 2, waitingLimit: 10)
        _ = flow.start()
        #expect(Self.describe(flow.pageRead(pruned: 0, page: Self.frames(1...2), writable: false)) == ["write f1,f2"])
        #expect(flow.phase == .replaying(cursor: 2, first: false, reading: false))
        #expect(Self.describe(flow.writable()) == ["read 2"])
        #expect(Self.describe(flow.writable()) == [])
        #expect(Self.describe(flow.pageRead(pruned: nil, page: [], writable: true)) == ["heartbeat"])
    }

    @Test("an end asked for during the replay comes after it and after what waited")
    func endAfterReplay() {
        var flow = Flow(since: 0, pageSize: 5, waitingLimit: 10)
        _ = flow.start()
        #expect(Self.describe(flow.live(Self.frames(3...4))) == [])
        #expect(Self.describe(flow.end()) == [])
        #expect(Self.describe(flow.pageRead(pruned: 0, page: Self.frames(1...3), writable: true)) == ["write f1,f2,f3", "write f4", "end"])
        #expect(flow.phase == .ended)
    }

    @Test("more live frames waiting for the replay than the limit: the stream is closed")
    func tooManyWaiting() {
        var flow = Flow(since: 0, pageSize: 5, waitingLimit: 3)
        _ = flow.start()
        #expect(Self.describe(flow.live(Self.frames(1...3))) == [])
        #expect(Self.describe(flow.live(Self.frames(4...4))) == ["close"])
        #expect(Self.describe(flow.pageRead(pruned: 0, page: Self.frames(1...3), writable: true)) == [])
    }
}
