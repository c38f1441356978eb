import Testing
import VMSessionCore

@Suite("Connection budget")
struct ConnectionBudgetTests {
    @Test("a shell's 1024 descriptors leave a reserve, and streams leave room for requests")
    func shellLimit() {
        let budget = ConnectionBudget.fitting(descriptorLimit: 1024, maxConnections: 4096, maxEventStreams: 2048)
        #expect(budget.connections == 1024 - ConnectionBudget.reserve)
        #expect(budget.eventStreams == budget.connections - ConnectionBudget.requestHeadroom)
    }

    @Test("a large limit is held to the configured maxima")
    func configuredMaxima() {
        let budget = ConnectionBudget.fitting(descriptorLimit: 65536, maxConnections: 4096, maxEventStreams: 2048)
        #expect(budget == ConnectionBudget(connections: 4096, eventStreams: 2048))
        let tight = ConnectionBudget.fitting(descriptorLimit: 65536, maxConnections: 100, maxEventStreams: 2048)
        #expect(tight == ConnectionBudget(connections: 100, eventStreams: 100 - ConnectionBudget.requestHeadroom))
    }

    @Test("whatever the limit, the daemon keeps a few connections and at least one stream", arguments: [0, 1, 100, 256, 272, 300])
    func tinyLimits(limit: Int) {
        let budget = ConnectionBudget.fitting(descriptorLimit: limit, maxConnections: 4096, maxEventStreams: 2048)
        #expect(budget.connections >= ConnectionBudget.minimumConnections)
        #expect(budget.eventStreams >= 1)
        #expect(budget.eventStreams <= budget.connections)
    }
}
