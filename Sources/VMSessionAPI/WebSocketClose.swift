import HummingbirdWebSocket
import NIOWebSocket

extension WebSocketOutboundWriter {
    /// Sends a close frame whose reason is cut to what a close frame holds (123 bytes), waiting at most
    /// `limit` for it: a client that does not read cannot take even that. Shared by the console and the display.
    func close(_ code: WebSocketErrorCode, fitting reason: String, within limit: Duration = .seconds(2)) async {
        let reason = String(reason.utf8.prefix(123)) ?? ""
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await self.close(code, reason: reason) }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }
}
