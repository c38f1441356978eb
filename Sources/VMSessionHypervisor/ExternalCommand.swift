import Foundation
import Subprocess
import VMSessionCore

/// Runs a helper program (qemu-img, genisoimage) with an argument vector: no shell ever sees the arguments.
enum ExternalCommand {
    static func run(_ program: String, _ arguments: [String]) async throws(VMSessionError) {
        _ = try await output(of: program, arguments)
    }

    /// Runs the program and returns what it printed on standard output (at most 1 MiB).
    static func output(of program: String, _ arguments: [String]) async throws(VMSessionError) -> String {
        let status: TerminationStatus
        let standardOutput: String?
        let standardError: String?
        do {
            let result = try await Subprocess.run(
                .name(program), arguments: Arguments(arguments), output: .string(limit: 1 << 20), error: .string(limit: 16 * 1024))
            status = result.terminationStatus
            standardOutput = result.standardOutput
            standardError = result.standardError
        } catch {
            throw VMSessionError(.ioError, "Could not run \(program); is it installed?", cause: error)
        }
        guard status.isSuccess else {
            let detail = (standardError ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            throw VMSessionError(.ioError, "\(program) failed (\(status)): \(detail)")
        }
        return standardOutput ?? ""
    }
}
