import Foundation
import Hummingbird
import NIOCore
import VMSessionCore

/// Reads a JSON request body strictly: a size limit, an object at the top, no field the endpoint does not
/// know, and every decoding problem reported by field name. Nothing is acted on until all of it passed.
enum RequestBody {
    /// The largest body accepted (user-data is bounded well below this).
    static let maximumBytes = 2 * 1024 * 1024

    static func decode<T: Decodable>(
        _ type: T.Type, from request: inout Request, allowed fields: Set<String>, emptyMeans empty: String? = nil
    ) async throws(VMSessionError) -> T {
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: maximumBytes)
        } catch {
            throw VMSessionError(.payloadTooLarge, "The request body is larger than \(maximumBytes) bytes.", cause: error)
        }
        // One copy of the body; both passes below parse it in place (no Foundation object tree, which
        // cost several times the body's size per string before).
        var data = Data(buffer.readableBytesView)
        if data.allSatisfy({ $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }) {
            guard let empty else { throw VMSessionError(.invalidArgument, "The request needs a JSON object body.") }
            data = Data(empty.utf8)
        }
        let decoder = JSONDecoder()
        let shape: ObjectShape
        do {
            shape = try decoder.decode(ObjectShape.self, from: data)
        } catch DecodingError.typeMismatch(_, let context) where context.codingPath.isEmpty {
            throw VMSessionError(.invalidArgument, "The request body must be a JSON object.")
        } catch {
            throw VMSessionError(.invalidArgument, "The request body is not valid JSON.", cause: error)
        }
        let unknown = shape.keys.subtracting(fields).sorted()
        if let first = unknown.first {
            let known = fields.sorted().map { "'\($0)'" }.joined(separator: ", ")
            throw VMSessionError(.invalidArgument, "Unknown field '\(first)'; this endpoint takes \(known.isEmpty ? "no fields" : known).")
        }
        // No field takes null: an optional field is left out to get its default, not sent as null.
        if let null = shape.nullKeys.sorted().first {
            throw VMSessionError(.invalidArgument, "The field '\(null)' must not be null; leave it out to get its default.")
        }
        do {
            return try decoder.decode(T.self, from: data)
        } catch let error as VMSessionError {
            throw error
        } catch let DecodingError.keyNotFound(key, _) {
            throw VMSessionError(.invalidArgument, "The field '\(key.stringValue)' is required.")
        } catch let DecodingError.typeMismatch(expected, context) {
            throw VMSessionError(.invalidArgument, "The field '\(fieldName(context))' must be \(describe(expected)).")
        } catch let DecodingError.valueNotFound(expected, context) {
            throw VMSessionError(.invalidArgument, "The field '\(fieldName(context))' must be \(describe(expected)), not null.")
        } catch let DecodingError.dataCorrupted(context) {
            throw VMSessionError(.invalidArgument, "The field '\(fieldName(context))' is not valid: \(context.debugDescription)")
        } catch {
            throw VMSessionError(.invalidArgument, "The request body does not match what this endpoint takes.", cause: error)
        }
    }

    private static func fieldName(_ context: DecodingError.Context) -> String {
        context.codingPath.map(\.stringValue).joined(separator: ".")
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Double.Type: "a number"
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        default: "of another type"
        }
    }

    /// The top level of a body: which fields it has and which of them are null, without keeping any value.
    /// Decoding it also proves the body is one JSON object.
    private struct ObjectShape: Decodable {
        struct AnyKey: CodingKey {
            let stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        let keys: Set<String>
        let nullKeys: Set<String>

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: AnyKey.self)
            keys = Set(container.allKeys.map(\.stringValue))
            nullKeys = Set(try container.allKeys.filter { try container.decodeNil(forKey: $0) }.map(\.stringValue))
        }
    }
}
