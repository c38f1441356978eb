import Testing
import VMSessionCore

@Suite("Input validation")
struct InputValidationTests {
    @Test(
        "session names with markup, shell or control characters are refused",
        arguments: ["", " lead", "trail ", "a<b", "a>b", "a&b", "a'b", "a\"b", "$(reboot)", "a;b", "a|b", "a`b`", "a/b", "a\nb", "a\\b",
                    String(repeating: "x", count: 129)])
    func badSessionNames(name: String) {
        #expect(!Identifier.isValidSessionName(name))
    }

    @Test("ordinary session names are accepted", arguments: ["demo", "My App: run 3", "user@example.org", "a.b_c-d+e", "x"])
    func goodSessionNames(name: String) {
        #expect(Identifier.isValidSessionName(name))
    }

    @Test(
        "requirements out of bounds are refused and name the field",
        arguments: [
            (Requirements(cpus: 0, memory: 256, disk: 1024, version: "appliance"), "cpus"),
            (Requirements(cpus: 17, memory: 256, disk: 1024, version: "appliance"), "cpus"),
            (Requirements(cpus: 1, memory: 63, disk: 1024, version: "appliance"), "memory"),
            (Requirements(cpus: 1, memory: 65_537, disk: 1024, version: "appliance"), "memory"),
            (Requirements(cpus: 1, memory: 256, disk: 15, version: "appliance"), "disk"),
            (Requirements(cpus: 1, memory: 256, disk: 1_048_577, version: "appliance"), "disk"),
            (Requirements(cpus: 1, memory: 256, disk: 1024, version: "../etc/passwd"), "version"),
            (Requirements(cpus: 1, memory: 256, disk: 1024, version: "<x/>"), "version"),
        ])
    func requirementsOutOfBounds(requirements: Requirements, field: String) {
        do {
            try requirements.validate()
            Issue.record("\(requirements) was accepted")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("'\(field)'"))
        }
    }

    @Test("the defaults are valid")
    func defaultsAreValid() throws {
        try Requirements.defaults.validate()
    }

    @Test("execution caps outside 1...100 are refused", arguments: [-1, 0, 101, 1000])
    func capOutOfRange(percent: Int) {
        #expect(throws: VMSessionError.self) { _ = try ExecutionCap(percent: percent) }
    }

    @Test("a cap becomes a quota per 100 ms period, and 100 % means no quota")
    func capQuota() throws {
        #expect(try ExecutionCap(percent: 25).quotaMicroseconds == 25_000)
        #expect(try ExecutionCap(percent: 1).quotaMicroseconds == 1_000)
        #expect(try ExecutionCap(percent: 100).quotaMicroseconds == nil)
    }

    @Test("session ids map to VM names and back, and foreign VM names are not ours")
    func machineNames() {
        let id = SessionID()
        #expect(SessionID(machineName: id.machineName) == id)
        #expect(SessionID(machineName: "test") == nil)
        #expect(SessionID(machineName: "vms-not-a-uuid") == nil)
    }
}
