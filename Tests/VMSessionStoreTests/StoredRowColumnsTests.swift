import Foundation
import GRDB
import Testing
import VMSessionCore
@testable import VMSessionStore

/// The rows the control path writes column by column (`encode(to:)` by hand, for speed) write exactly what
/// Codable with snake_case columns writes, the way they are read back: a property added to a row and not to
/// its `encode(to:)`, or a misspelt column, fails here rather than losing a value on disk.
@Suite("Stored row columns")
struct StoredRowColumnsTests {
    /// A row encoded through Codable, with the store's column and date strategies: what the rows wrote before
    /// they had an `encode(to:)` of their own.
    struct ThroughCodable<Row: Encodable>: Encodable, EncodableRecord {
        let row: Row
        static var databaseColumnEncodingStrategy: DatabaseColumnEncodingStrategy { .convertToSnakeCase }
        static func databaseDateEncodingStrategy(for column: String) -> DatabaseDateEncodingStrategy {
            .custom { StorageDate.text($0) }
        }
        func encode(to encoder: any Encoder) throws { try row.encode(to: encoder) }
    }

    static func columns<Row: Encodable & EncodableRecord>(_ row: Row) throws -> ([String: DatabaseValue], [String: DatabaseValue]) {
        (try row.databaseDictionary, try ThroughCodable(row: row).databaseDictionary)
    }

    static let now = Date(timeIntervalSince1970: 1_796_554_628.8954)

    @Test("a session row writes the columns and values Codable writes, with every optional set and with none")
    func sessionRow() throws {
        var stored = SessionStoreTests.newSession("columns")
        stored.pendingAction = .pause
        stored.session.requirements = Requirements(cpus: 2, memory: 512, disk: 1024, version: "appliance")
        stored.session.executionCap = try ExecutionCap(percent: 40)
        stored.session.daemon = DaemonControl(controlled: true, minCap: 10, maxCap: 90, flags: 3)
        stored.session.lastError = "it failed"
        stored.session.operationID = OperationID()
        stored.session.egress = .internet
        stored.session.updatedAt = Self.now
        let (full, fullCodable) = try Self.columns(SessionRow(stored))
        #expect(full == fullCodable)
        #expect(full.values.allSatisfy { !$0.isNull }, "every column of the full row has a value")
        let (bare, bareCodable) = try Self.columns(SessionRow(SessionStoreTests.newSession("bare")))
        #expect(bare == bareCodable)
    }

    @Test("an operation row writes the columns and values Codable writes, with and without an error")
    func operationRow() throws {
        var operation = SessionOperation(
            sessionID: SessionID(), action: .pause, progress: .init(done: 1, total: 2, message: "half"),
            createdAt: Self.now, updatedAt: Self.now.addingTimeInterval(0.25))
        let (plain, plainCodable) = try Self.columns(OperationRow(operation))
        #expect(plain == plainCodable)
        operation.status = .failed
        operation.error = .init(VMSessionError(.invalidState, "not now"))
        let (failed, failedCodable) = try Self.columns(OperationRow(operation))
        #expect(failed == failedCodable)
        #expect(failed.values.allSatisfy { !$0.isNull }, "every column of the failed operation has a value")
    }

    @Test("an event row writes the columns and values Codable writes, before and after its id is known")
    func eventRow() throws {
        for id in [nil, Int64(42)] {
            let row = EventRow(id: id, sessionId: SessionID().description, kind: "stateChanged", payload: "{}", createdAt: Self.now)
            let (mine, codable) = try Self.columns(row)
            #expect(mine == codable)
        }
    }
}
