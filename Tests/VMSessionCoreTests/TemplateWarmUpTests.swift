import Testing
import VMSessionCore

/// The pure parts of a template's warm-up from an image: what a request may be, and how the guest's ready
/// line is found in its console output however that output is cut into reads.
@Suite struct TemplateWarmUpTests {
    static let valid = TemplateWarmUpRequest(
        name: "warm", requirements: Requirements(cpus: 1, memory: 256, disk: 64, version: "appliance"),
        userData: "#!/bin/sh\necho VMSESSION-TEMPLATE-READY\n")

    /// One read of console output, fed to `scanner` (outside #expect, which cannot call a mutating method).
    static func feed(_ scanner: inout ReadyMarkerScanner, _ text: String) -> Bool { scanner.feed(Array(text.utf8)) }

    @Test("a ready line is found whole, across reads, after a carriage return, and only as a line of its own")
    func findsTheReadyLine() {
        var scanner = ReadyMarkerScanner()
        #expect(!Self.feed(&scanner, "booting\nVMSESSION-TEMPLATE-RE"))
        #expect(Self.feed(&scanner, "ADY\r\n"), "a line cut in two reads, ended by CR LF")

        var quoted = ReadyMarkerScanner()
        #expect(!Self.feed(&quoted, "+ echo VMSESSION-TEMPLATE-READY\n"), "a shell trace that names it is not the line")
        #expect(!Self.feed(&quoted, "VMSESSION-TEMPLATE-READY-NOT\n"))
        #expect(!Self.feed(&quoted, "VMSESSION-TEMPLATE-READY"), "not yet: the line has not ended")
        #expect(Self.feed(&quoted, "\n"))

        var long = ReadyMarkerScanner()
        let overlong = String(repeating: " ", count: 300) + "VMSESSION-TEMPLATE-READY\n"
        #expect(!Self.feed(&long, overlong), "a line too long to be the marker is not, even if it ends with it")
        #expect(Self.feed(&long, "  VMSESSION-TEMPLATE-READY  \n"), "blanks around it are the console's")
    }

    @Test("a warm-up request is refused, saying which field, without a name, user-data, sane shape or timeout")
    func validatesRequests() throws {
        try Self.valid.validate()
        var noName = Self.valid
        noName.name = "not a name"
        #expect(throws: VMSessionError.self) { try noName.validate() }
        var noUserData = Self.valid
        noUserData.userData = ""
        let error = #expect(throws: VMSessionError.self) { try noUserData.validate() }
        #expect(error?.code == .invalidArgument && error?.message.contains("VMSESSION-TEMPLATE-READY") == true)
        var tooLong = Self.valid
        tooLong.readyTimeout = .seconds(3601)
        #expect((#expect(throws: VMSessionError.self) { try tooLong.validate() })?.message.contains("readyTimeout") == true)
        var tooBig = Self.valid
        tooBig.requirements.memory = 1 << 20
        #expect((#expect(throws: VMSessionError.self) { try tooBig.validate() })?.message.contains("memory") == true)
        #expect(Self.valid.sessionName == "template:warm")
    }
}
