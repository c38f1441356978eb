import Foundation
import GRDB
import Testing
@testable import VMSessionStore

/// The store writes dates itself (no `DateFormatter`, hence no ICU in an idle daemon), and must write exactly
/// what GRDB's formatter wrote: rows of either kind are compared and sorted as text in the same columns.
@Suite("Storage dates")
struct StorageDateTests {
    /// GRDB's own text for a date (`Date.databaseValue`, a `DateFormatter` in UTC).
    static func grdbText(_ date: Date) -> String? {
        String.fromDatabaseValue(date.databaseValue)
    }

    @Test("a date is written as the very text GRDB's formatter writes, at millisecond and day boundaries and across eras")
    func sameTextAsGRDB() {
        var instants: [Double] = [0, -0.0005, -1, -86_400.0001, 951_782_400, 951_868_799.9995, 4_102_444_799.999_999_9]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            instants.append(Double.random(in: -2_208_988_800...4_102_444_800, using: &generator))
        }
        let base = Date().timeIntervalSince1970.rounded(.down)
        for offset in [0.0004, 0.0005, 0.0006, 0.9994, 0.9995, 0.9996, 0.123456, 0.999_999, 0.001, 0.1 + 0.2] {
            instants.append(base + offset)
            // Events are stored rounded to the millisecond first: those instants sit on a boundary.
            instants.append(Date(timeIntervalSince1970: base + offset).millisecondPrecision.timeIntervalSince1970)
        }
        for seconds in instants {
            let date = Date(timeIntervalSince1970: seconds)
            #expect(StorageDate.text(date) == Self.grdbText(date), "at \(seconds)")
        }
    }

    @Test("every row with a date column writes it through StorageDate, not GRDB's formatter")
    func rowsUseStorageDate() {
        func isCustom<Row: EncodableRecord>(_: Row.Type) -> Bool {
            if case .custom = Row.databaseDateEncodingStrategy(for: "created_at") { return true }
            return false
        }
        #expect(isCustom(SessionRow.self))
        #expect(isCustom(EventRow.self))
        #expect(isCustom(OperationRow.self))
        #expect(isCustom(TokenRow.self))
        #expect(isCustom(ImageRow.self))
        #expect(isCustom(OriginRow.self))
    }
}
