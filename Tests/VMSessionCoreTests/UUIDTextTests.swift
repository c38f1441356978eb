import Foundation
import Testing
import VMSessionCore

@Suite("UUID text")
struct UUIDTextTests {
    @Test("every canonical UUID reads as Foundation reads it, in lower and upper case")
    func readsWhatFoundationReads() {
        for _ in 0..<1000 {
            let uuid = UUID()
            #expect(UUIDText.parse(uuid.uuidString) == uuid)
            #expect(UUIDText.parse(uuid.uuidString.lowercased()) == uuid)
            #expect(SessionID(uuid.uuidString.lowercased())?.uuid == uuid)
        }
        #expect(UUIDText.parse("00000000-0000-0000-0000-000000000000") == UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)))
        #expect(UUIDText.parse("FFFFFFFF-ffff-FFFF-ffff-FFFFFFFFFFFF") == UUID(uuidString: "ffffffff-ffff-ffff-ffff-ffffffffffff"))
    }

    @Test("anything but 8-4-4-4-12 hex digits is no UUID")
    func refusesEverythingElse() {
        let valid = "0f9c2a4e-5b7d-4c1e-9a3f-6d8e0b1c2d3e"
        #expect(UUIDText.parse(valid) != nil)
        for text in [
            "", "0f9c2a4e", valid + "0", String(valid.dropLast()), "{\(valid)}", " \(valid.dropFirst())",
            "0f9c2a4e-5b7d-4c1e-9a3f-6d8e0b1c2d3g", "0f9c2a4e 5b7d-4c1e-9a3f-6d8e0b1c2d3e", "0f9c2a4e-5b7d4-c1e-9a3f-6d8e0b1c2d3e",
            "+f9c2a4e-5b7d-4c1e-9a3f-6d8e0b1c2d3e", "0x9c2a4e-5b7d-4c1e-9a3f-6d8e0b1c2d3e", "0f9c2a4e-5b7d-4c1e-9a3f-6d8e0b1c2d3é",
            "0f9c2a4e05b7d04c1e09a3f06d8e0b1c2d3e", "sessions-and-other-path-words-here!!",
        ] {
            #expect(UUIDText.parse(text) == nil, "\(text)")
            #expect(SessionID(text) == nil, "\(text)")
        }
    }
}
