import VMSessionCore

/// Runs a database call for the daemon's actors: a ``VMSessionError`` passes through, anything else the
/// store throws becomes `io_error`, so callers keep one typed error.
func storeCall<T>(_ body: () throws -> T) throws(VMSessionError) -> T {
    do { return try body() } catch let error as VMSessionError { throw error } catch {
        throw VMSessionError(.ioError, "The database failed.", cause: error)
    }
}
