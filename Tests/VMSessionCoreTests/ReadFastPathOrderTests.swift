import Testing
import VMSessionCore

/// The read fast path answers a request itself only when no answer of the router's is still owed before it,
/// and never after a request the router may end the connection with.
@Suite("Read fast path order")
struct ReadFastPathOrderTests {
    @Test("requests answered by the fast path alone are each written at their end")
    func aloneAnsweredAtTheEnd() {
        var order = ReadFastPathOrder()
        for _ in 0..<3 {
            #expect(order.mayAnswer)
            order.held()
            #expect(!order.mayAnswer)
            #expect(order.end() == .writeAnswer)
        }
        #expect(order.mayAnswer)
    }

    @Test("after a request passed on, nothing is answered until the router's answer has ended")
    func waitsForTheRouter() {
        var order = ReadFastPathOrder()
        order.passed(mayClose: false)
        #expect(order.end() == .pass)
        #expect(!order.mayAnswer)
        // A pipelined request read meanwhile goes to the router too.
        order.passed(mayClose: false)
        #expect(order.end() == .pass)
        order.answerEnded()
        #expect(!order.mayAnswer)
        order.answerEnded()
        #expect(order.mayAnswer)
        order.held()
        #expect(order.end() == .writeAnswer)
    }

    @Test("after a request the router may end the connection with, every request is the router's")
    func nothingAfterClose() {
        var order = ReadFastPathOrder()
        order.passed(mayClose: true)
        #expect(order.end() == .pass)
        order.answerEnded()
        #expect(!order.mayAnswer)
        #expect(order.passOnly)
        // An answer ending that was never owed (an informational or stray end) does not go below zero.
        order.answerEnded()
        #expect(order.unanswered == 0)
    }
}
