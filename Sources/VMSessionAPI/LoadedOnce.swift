import Synchronization
import VMSessionCore

/// Something read from disk the first time a request asks for it, and kept from then on.
///
/// It exists so that an idle daemon holds no copy of what only a page showing a display or a console uses
/// (noVNC's modules, xterm.js bundled from node-xterm's modules: about 1.4 MiB with the transient copies the
/// bundling makes). The read runs on a Dispatch thread, off Swift's cooperative pool.
final class LoadedOnce<Value: Sendable>: Sendable {
    private let load: @Sendable () -> Value
    private let loaded = Mutex<Value?>(nil)

    init(_ load: @escaping @Sendable () -> Value) {
        self.load = load
    }

    /// The value, read on the first call. Two first calls at once may both read; both get the one kept.
    func value() async -> Value {
        if let value = loaded.withLock({ $0 }) { return value }
        let load = self.load
        let value = await offPool(load)
        return loaded.withLock { stored in
            if let stored { return stored }
            stored = value
            return value
        }
    }
}
