import Foundation

/// Runs a program to its end, as the tests' shell would: what it printed (stdout and stderr together) and
/// its exit status.
enum Command {
    /// For programs that return at once (chmod, useradd): blocks the calling thread.
    static func run(_ program: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    /// For programs that take a while (a README block, vmsessionctl, curl): waits on a thread of its own, not
    /// on one of Swift's cooperative threads. There are as many of those as cores, shared by every test in the
    /// process: a README block holding one for 20 s beside another blocked test stalled every timer of the
    /// rest (a console test's 300 ms idle close timed out after 5 s).
    static func run(_ program: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await onThread { try run(program, arguments) as (status: Int32, output: String) }
    }

    /// Runs blocking work (waiting for a program, reading its pipe) on a thread of its own and awaits it.
    static func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try work() }) }.start()
        }
    }
}
