import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Encodes response bodies the same way everywhere: camelCase keys, ISO 8601 times, sorted keys.
enum JSONResponse {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    static func make(_ value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        make(body: encode(value), status: status, headers: headers)
    }

    /// A response with a body encoded before (see ``EncodedViews``): the same bytes for every request.
    static func make(body: ByteBuffer, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var headers = headers
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: .init(byteBuffer: body))
    }

    static func encode(_ value: some Encodable) -> ByteBuffer {
        let data = (try? encoder.encode(value)) ?? Data(#"{"error":{"code":"internal_error","legacyCode":-7,"message":"encoding failed"}}"#.utf8)
        return ByteBuffer(bytes: data)
    }
}
