import Foundation
import Subprocess
import VMSessionCore

/// Runs a helper program (qemu-img, xorriso) with an argument vector: no shell ever sees the arguments.
enum ExternalCommand {
    static func run(_ program: String, _ arguments: [String]) async throws(VMSessionError) {
        let status: TerminationStatus
        let standardError: String?
        do {
            let result = try await Subprocess.run(
                .name(program), arguments: Arguments(arguments), output: .discarded, error: .string(limit: 16 * 1024))
            status = result.terminationStatus
            standardError = result.standardError
        } catch {
            throw VMSessionError(.ioError, "Could not run \(program); is it installed?", cause: error)
        }
        guard status.isSuccess else {
            let detail = (standardError ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            throw VMSessionError(.ioError, "\(program) failed (\(status)): \(detail)")
        }
    }
}
