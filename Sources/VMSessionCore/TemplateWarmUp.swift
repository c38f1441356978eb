import Foundation

/// What an admin asks for to make a template from an image rather than from a session they prepared by
/// hand: the image, the VM's shape, and a one-time warm-up user-data that gets the guest ready (installs,
/// starts, fills caches) and then says so on its serial console (see ``ReadyMarkerScanner``). The daemon
/// boots an internal session with it, waits for that line, makes the template and closes the session.
public struct TemplateWarmUpRequest: Equatable, Sendable {
    public var name: String
    /// The VM's shape; `version` is the image the warm-up boots.
    public var requirements: Requirements
    /// The warm-up user-data, a template filled from `parameters` (as a `start`'s).
    public var userData: String
    public var parameters: [String: String]
    /// How long the guest has, from the start of its boot, to print the ready line.
    public var readyTimeout: Duration

    public static let defaultReadyTimeout: Duration = .seconds(600)
    public static let readyTimeoutRange = 1...3600

    public init(
        name: String, requirements: Requirements, userData: String, parameters: [String: String] = [:],
        readyTimeout: Duration = defaultReadyTimeout
    ) {
        self.name = name
        self.requirements = requirements
        self.userData = userData
        self.parameters = parameters
        self.readyTimeout = readyTimeout
    }

    /// The internal session's name: one per template name, so two warm-ups of one name cannot run at once,
    /// and what a daemon stopped in the middle left is found by name.
    public var sessionName: String { "template:\(name)" }

    /// Throws `invalid_argument`, saying which field is wrong, before anything is made.
    public func validate() throws(VMSessionError) {
        try VMTemplate.validate(name: name)
        try requirements.validate()
        guard !userData.isEmpty else {
            throw VMSessionError(
                .invalidArgument,
                "'userData' is needed: the warm-up runs it, and it must print the line \(ReadyMarkerScanner.marker) on the "
                    + "serial console when the guest is ready to be saved.")
        }
        let seconds = readyTimeout.components.seconds
        guard Self.readyTimeoutRange.contains(Int(seconds)) else {
            throw VMSessionError(
                .invalidArgument,
                "'readyTimeout' must be between \(Self.readyTimeoutRange.lowerBound) and \(Self.readyTimeoutRange.upperBound) seconds; got \(seconds).")
        }
    }
}

/// Finds the warm-up's ready line in the serial console's output as it arrives: a line that is exactly
/// ``marker`` (a carriage return and surrounding blanks aside), however the output is cut into reads.
///
/// The console, not the guest API: every guest has one (the appliance's user-data writes to it, cloud-init's
/// scripts' output reaches it through cloud-final), it needs no network or web server, nothing is left in
/// the guest's files for the template's sessions to inherit, and the daemon keeps its log already; a guest
/// API that answers says only that a server runs, not that the warm-up is done.
public struct ReadyMarkerScanner: Sendable {
    public static let marker = "VMSESSION-TEMPLATE-READY"
    /// A line longer than this is no marker: only its first bytes are kept to compare.
    static let keep = 256
    private var line: [UInt8] = []
    private var overlong = false

    public init() {}

    /// Feeds the next bytes of the console; true once a complete ready line was in them (or before).
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> Bool {
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                if !overlong, Self.isMarker(line) { return true }
                line.removeAll(keepingCapacity: true)
                overlong = false
            } else if line.count < Self.keep {
                line.append(byte)
            } else {
                overlong = true
            }
        }
        return false
    }

    static func isMarker(_ line: [UInt8]) -> Bool {
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text == marker
    }
}

/// A warm-up as the admin follows it: the steps done out of all, what is being done, how it ended (the
/// same fields as an operation's), and the internal session that carries it (its own operations and
/// events show each step in detail).
public struct TemplateWarmUpStatus: Codable, Equatable, Sendable {
    public var name: String
    public var image: String
    public var session: SessionID?
    public var status: SessionOperation.Status
    public var progress: SessionOperation.Progress
    public var error: SessionOperation.ErrorInfo?
    public var createdAt: Date
    public var updatedAt: Date

    /// The steps: the internal session opened, booted with the warm-up, ready, template made, session closed.
    public static let steps = 5

    public init(name: String, image: String, at now: Date) {
        self.name = name
        self.image = image
        status = .running
        progress = .init(done: 0, total: Self.steps, message: "warm-up requested")
        createdAt = now
        updatedAt = now
    }

    enum CodingKeys: String, CodingKey {
        case name, image, session = "sessionId", status, progress, error, createdAt, updatedAt
    }
}
