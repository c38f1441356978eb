import Foundation
import NIOCore
import Testing
import VMSessionCore
import VMSessionDaemon
@testable import VMSessionAPI

/// What the API shows of a session's guest API and of event times.
@Suite("Session views")
struct GuestAPIViewTests {
    @Test("apiURL is shown while the VM has a process, not once it is hibernated, stopped or closed")
    func apiURLOnlyWithAProcess() {
        let now = Date()
        for (state, shown) in [(SessionState.running, true), (.paused, true), (.saved, false), (.open, false), (.closed, false), (.error, false)] {
            let session = Session(id: SessionID(), name: "view", state: state, egress: .internet, createdAt: now, updatedAt: now)
            let address = DaemonAddress()
            address.listening(host: "127.0.0.1", port: 7011)
            let view = SessionView(session, address: address)
            #expect(view.apiURL == (shown ? "http://127.0.0.1:7011/api/v1/sessions/\(session.id)/guest" : nil), "\(state)")
            #expect(view.egress == "internet", "the policy the VM was started with is shown")
            #expect(view.ip == nil, "no ip while the guest API has not answered")
        }
    }

    @Test("an SSE frame carries the event's time to the millisecond")
    func frameHasMilliseconds() {
        let time = Date(timeIntervalSince1970: 1_800_000_000.123)
        let event = SessionEvent(id: 7, sessionID: SessionID(), kind: .propertyChanged, payload: "{}", time: time)
        let frame = String(buffer: EventsController.frame(event))
        #expect(frame.contains(#""time":"2027-01-15T08:00:00.123Z""#), "\(frame)")
    }
}
