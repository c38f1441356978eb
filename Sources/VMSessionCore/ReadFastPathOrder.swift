/// Which requests of one HTTP/1 connection the read fast path may answer itself, so that every answer leaves
/// in the order its request came and none follows the end of the connection.
///
/// Why it exists: the fast path answers a request as it is read, while a request it passes on is answered
/// later by the async router. With pipelining (several requests sent before the first answer) an answer of
/// its own could overtake an earlier request's; and after a request with `Connection: close` the router ends
/// the connection, so nothing may be answered past it. The rule: the fast path answers only while no request
/// it passed on waits for its answer; after a request that may end the connection it answers nothing more.
/// A value with no I/O: the channel handler feeds it the parts it sees and does what it returns.
public struct ReadFastPathOrder: Sendable, Equatable {
    /// What to do with a request's end.
    public enum EndAction: Sendable, Equatable {
        /// The fast path answered the request at its head: write that answer now.
        case writeAnswer
        /// The request was passed on: pass its end on too.
        case pass
    }

    /// Requests passed on whose answers have not been written in full.
    public private(set) var unanswered = 0
    /// A request the fast path answers is between its head and its end.
    public private(set) var holding = false
    /// A request passed on may end the connection: every request after it is passed on too.
    public private(set) var passOnly = false

    public init() {}

    /// Whether the fast path may answer the request whose head was just read.
    public var mayAnswer: Bool { unanswered == 0 && !holding && !passOnly }

    /// The fast path answers the request whose head was just read (only when ``mayAnswer``).
    public mutating func held() {
        precondition(mayAnswer, "the fast path answered a request it had to pass on")
        holding = true
    }

    /// The request whose head was just read is passed on; `mayClose` if the router may end the connection after it.
    public mutating func passed(mayClose: Bool) {
        unanswered += 1
        if mayClose { passOnly = true }
    }

    /// A request's end was read.
    public mutating func end() -> EndAction {
        guard holding else { return .pass }
        holding = false
        return .writeAnswer
    }

    /// The router wrote the end of an answer to a request passed on.
    public mutating func answerEnded() {
        if unanswered > 0 { unanswered -= 1 }
    }
}
