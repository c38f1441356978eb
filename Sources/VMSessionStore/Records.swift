import Foundation
import GRDB
import VMSessionCore

// Row types, one per table. They stay internal: the store speaks in VMSessionCore's types.
//
// They are read through Codable (snake_case columns). The three that every pause, resume and cap writes
// (sessions, operations, events) are written column by column: through Codable, each write encoded every
// property through a keyed container and converted its name to snake_case; under `perf`, the store's writes
// were a fifth of the daemon's CPU per control action, and that encoding more than half of each (issue #20).
// `StoredRowColumnsTests` holds each to what Codable would write: a column added to a row and not to its
// `encode(to:)` fails a test.

struct SessionRow: Codable, FetchableRecord, PersistableRecord, StorageDated {
    static let databaseTableName = "sessions"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase

    var id: String
    var name: String
    var secretKdf: String
    var secretSalt: Data
    var secretHash: Data
    var state: String
    var pendingAction: String?
    var cpus: Int?
    var memory: Int?
    var disk: Int?
    var version: String?
    var executionCap: Int
    var daemonControlled: Bool
    var daemonMinCap: Int
    var daemonMaxCap: Int
    var daemonFlags: Int
    var lastError: String?
    var operationId: String?
    var egress: String?
    var client: String
    var host: String
    var createdAt: Date
    var updatedAt: Date

    init(_ stored: StoredSession) {
        let session = stored.session
        id = session.id.description
        name = session.name
        secretKdf = stored.secret.kdf
        secretSalt = Data(stored.secret.salt)
        secretHash = Data(stored.secret.hash)
        state = session.state.rawValue
        pendingAction = stored.pendingAction?.rawValue
        cpus = session.requirements?.cpus
        memory = session.requirements?.memory
        disk = session.requirements?.disk
        version = session.requirements?.version
        executionCap = session.executionCap.percent
        daemonControlled = session.daemon.controlled
        daemonMinCap = session.daemon.minCap
        daemonMaxCap = session.daemon.maxCap
        daemonFlags = session.daemon.flags
        lastError = session.lastError
        operationId = session.operationID?.description
        egress = session.egress?.rawValue
        client = stored.client
        host = session.host
        createdAt = session.createdAt
        updatedAt = session.updatedAt
    }

    func stored() throws -> StoredSession {
        guard let id = SessionID(id), let state = SessionState(rawValue: state) else {
            throw VMSessionError(.internalError, "The session row '\(id)' in the database is not valid.")
        }
        var requirements: Requirements?
        if let cpus, let memory, let disk, let version {
            requirements = Requirements(cpus: cpus, memory: memory, disk: disk, version: version)
        }
        let session = Session(
            id: id, name: name, state: state, requirements: requirements,
            executionCap: (try? ExecutionCap(percent: executionCap)) ?? .unlimited,
            daemon: DaemonControl(controlled: daemonControlled, minCap: daemonMinCap, maxCap: daemonMaxCap, flags: daemonFlags),
            lastError: lastError, operationID: operationId.flatMap(OperationID.init), egress: egress.flatMap(EgressPolicy.init(rawValue:)),
            host: host, createdAt: createdAt, updatedAt: updatedAt)
        return StoredSession(
            session: session, secret: SecretDigest(kdf: secretKdf, salt: Array(secretSalt), hash: Array(secretHash)),
            pendingAction: pendingAction.flatMap(SessionAction.init(rawValue:)), client: client)
    }
}

extension SessionRow {
    /// Written column by column on the control path's every write (see the note at the top).
    func encode(to container: inout PersistenceContainer) {
        container["id"] = id
        container["name"] = name
        container["secret_kdf"] = secretKdf
        container["secret_salt"] = secretSalt
        container["secret_hash"] = secretHash
        container["state"] = state
        container["pending_action"] = pendingAction
        container["cpus"] = cpus
        container["memory"] = memory
        container["disk"] = disk
        container["version"] = version
        container["execution_cap"] = executionCap
        container["daemon_controlled"] = daemonControlled
        container["daemon_min_cap"] = daemonMinCap
        container["daemon_max_cap"] = daemonMaxCap
        container["daemon_flags"] = daemonFlags
        container["last_error"] = lastError
        container["operation_id"] = operationId
        container["egress"] = egress
        container["client"] = client
        container["host"] = host
        container["created_at"] = StorageDate.text(createdAt)
        container["updated_at"] = StorageDate.text(updatedAt)
    }
}

struct EventRow: Codable, FetchableRecord, MutablePersistableRecord, StorageDated {
    static let databaseTableName = "events"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase

    var id: Int64?
    var sessionId: String
    var kind: String
    var payload: String
    var createdAt: Date

    mutating func didInsert(_ inserted: InsertionSuccess) {
        id = inserted.rowID
    }

    /// Written column by column on the control path's every write (see the note at the top).
    func encode(to container: inout PersistenceContainer) {
        container["id"] = id
        container["session_id"] = sessionId
        container["kind"] = kind
        container["payload"] = payload
        container["created_at"] = StorageDate.text(createdAt)
    }

    func event() -> SessionEvent? {
        guard let id, let sessionID = SessionID(sessionId), let kind = SessionEvent.Kind(rawValue: kind) else { return nil }
        return SessionEvent(id: id, sessionID: sessionID, kind: kind, payload: payload, time: createdAt.millisecondPrecision)
    }
}

struct OperationRow: Codable, FetchableRecord, PersistableRecord, StorageDated {
    static let databaseTableName = "operations"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase

    var id: String
    var sessionId: String
    var action: String
    var status: String
    var progressDone: Int
    var progressTotal: Int
    var progressMessage: String
    var errorCode: String?
    var errorLegacyCode: Int?
    var errorMessage: String?
    var createdAt: Date
    var updatedAt: Date

    init(_ operation: SessionOperation) {
        id = operation.id.description
        sessionId = operation.sessionID.description
        action = operation.action.rawValue
        status = operation.status.rawValue
        progressDone = operation.progress.done
        progressTotal = operation.progress.total
        progressMessage = operation.progress.message
        errorCode = operation.error?.code
        errorLegacyCode = operation.error?.legacyCode
        errorMessage = operation.error?.message
        createdAt = operation.createdAt
        updatedAt = operation.updatedAt
    }

    /// Written column by column on the control path's every write (see the note at the top).
    func encode(to container: inout PersistenceContainer) {
        container["id"] = id
        container["session_id"] = sessionId
        container["action"] = action
        container["status"] = status
        container["progress_done"] = progressDone
        container["progress_total"] = progressTotal
        container["progress_message"] = progressMessage
        container["error_code"] = errorCode
        container["error_legacy_code"] = errorLegacyCode
        container["error_message"] = errorMessage
        container["created_at"] = StorageDate.text(createdAt)
        container["updated_at"] = StorageDate.text(updatedAt)
    }

    func operation() -> SessionOperation? {
        guard let id = OperationID(id), let sessionID = SessionID(sessionId),
            let action = SessionAction(rawValue: action), let status = SessionOperation.Status(rawValue: status)
        else { return nil }
        var error: SessionOperation.ErrorInfo?
        if let errorCode, let errorMessage {
            error = SessionOperation.ErrorInfo(
                VMSessionError(.init(errorCode, legacyCode: errorLegacyCode ?? -7), errorMessage))
        }
        return SessionOperation(
            id: id, sessionID: sessionID, action: action, status: status,
            progress: .init(done: progressDone, total: progressTotal, message: progressMessage),
            error: error, createdAt: createdAt, updatedAt: updatedAt)
    }
}

struct TokenRow: Codable, FetchableRecord, PersistableRecord, StorageDated {
    static let databaseTableName = "session_tokens"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    var tokenHash: Data
    var sessionId: String
    var createdAt: Date
}

extension Date {
    /// This instant to the millisecond, as SQLite keeps it: the same value whether just stored or read back.
    var millisecondPrecision: Date {
        Date(timeIntervalSince1970: (timeIntervalSince1970 * 1000).rounded() / 1000)
    }
}
