import Foundation
import Logging
import Testing
import VMSessionCore
import VMSessionDaemon
import VMSessionStore

@Suite("Host labels per origin: the admin's restriction of where an origin's sessions are placed")
struct OriginHostLabelsTests {
    @Test("an approved origin's host labels survive a restart; a denied or unknown origin has none; approving again without them lifts them")
    func keptAndCleared() throws {
        let store = try SessionStore.inMemory()
        let logger = Logger(label: "test.origins")
        let page = try #require(WebOrigin("http://localhost:9417"))
        let other = try #require(WebOrigin("http://localhost:9418"))
        let first = try OriginRegistry(store: store, logger: logger)
        _ = try first.decide(page, .approved, hostLabels: ["room": "a", "gpu": "none"])
        _ = try first.decide(other, .denied, hostLabels: ["room": "a"])
        #expect(first.hostLabels(of: page) == ["room": "a", "gpu": "none"])
        #expect(first.hostLabels(of: other).isEmpty, "a denied origin is restricted to nothing: it may not open at all")

        let second = try OriginRegistry(store: store, logger: logger)
        #expect(second.hostLabels(of: page) == ["room": "a", "gpu": "none"])
        #expect(second.hostLabels(of: try #require(WebOrigin("http://localhost:1"))).isEmpty)
        _ = try second.decide(page, .approved)
        #expect(second.hostLabels(of: page).isEmpty)
        #expect(try OriginRegistry(store: store, logger: logger).hostLabels(of: page).isEmpty)
    }
}
