import Foundation

/// What the admin says about one libvirt host: its name, how to reach it, its labels, its session limit and
/// whether it is draining. It exists so that every way a host comes in (the config file, `POST /api/v1/hosts`,
/// `vmsessionctl hosts add`) is checked by the same rules, here, before anything is stored or connected.
public struct HostDefinition: Equatable, Sendable {
    /// Where the admin defined the host: the daemon's own (`local`), the config file, or the API.
    public enum Source: String, Sendable, CaseIterable {
        /// The daemon's own libvirt (the embedded driver by default); always there, never removed.
        case local
        /// The config file's `hosts`: changed there, not through the API.
        case config
        /// Added with `POST /api/v1/hosts` (`vmsessionctl hosts add`).
        case admin
    }

    /// The name of the daemon's own host.
    public static let localName = "local"
    /// Labels per host at most, and their sizes.
    public static let maximumLabels = 16
    public static let maximumURIBytes = 1024
    public static let sessionLimitRange = 1...10_000

    public var name: String
    public var uri: String
    public var labels: [String: String]
    public var maxSessions: Int?
    public var draining: Bool
    public var source: Source

    public init(
        name: String, uri: String, labels: [String: String] = [:], maxSessions: Int? = nil, draining: Bool = false, source: Source
    ) {
        self.name = name
        self.uri = uri
        self.labels = labels
        self.maxSessions = maxSessions
        self.draining = draining
        self.source = source
    }

    /// A host the admin asks for, checked whole: its name, URI, labels and limit. Throws `invalid_argument`
    /// saying what is wrong.
    public static func validated(
        name: String, uri: String, labels: [String: String], maxSessions: Int?, source: Source
    ) throws(VMSessionError) -> HostDefinition {
        try validate(name: name)
        if name == localName {
            throw VMSessionError(.invalidArgument, "'\(localName)' is the daemon's own host; choose another name.")
        }
        try validate(uri: uri)
        try validate(labels: labels)
        if let maxSessions, !sessionLimitRange.contains(maxSessions) {
            throw VMSessionError(
                .invalidArgument,
                "'maxSessions' must be from \(sessionLimitRange.lowerBound) to \(sessionLimitRange.upperBound); got \(maxSessions).")
        }
        return HostDefinition(name: name, uri: uri, labels: labels, maxSessions: maxSessions, source: source)
    }

    /// A host name: 1 to 63 lowercase letters, digits and '-', starting with a letter or digit (a DNS label, so
    /// that it reads the same in a URL, a metric label and a shell).
    public static func validate(name: String) throws(VMSessionError) {
        let bytes = Array(name.utf8)
        let valid = (1...63).contains(bytes.count) && isLowerAlphanumeric(bytes[0])
            && bytes.allSatisfy { isLowerAlphanumeric($0) || $0 == UInt8(ascii: "-") }
        guard valid else {
            throw VMSessionError(
                .invalidArgument,
                "A host name is 1 to 63 lowercase letters, digits and '-', starting with a letter or digit; got '\(name.prefix(80))'.")
        }
    }

    /// Whether `uri` reaches libvirt on another machine (SSH or TLS), whose files and processes the daemon cannot
    /// touch directly: such a host's VMs get their files through storage volumes and have no guest network.
    public static func isRemoteTransport(_ uri: String) -> Bool {
        ["qemu+ssh:", "qemu+tls:", "qemu+libssh2:"].contains { uri.lowercased().hasPrefix($0) }
    }

    /// The libvirt URIs a host may have: a remote daemon over SSH or TLS (`qemu+ssh://[user@]host[:port]/session|system`,
    /// `qemu+tls://host[:port]/system`), a local daemon (`qemu:///session`, `qemu:///system`), or libvirt's test
    /// driver (`test:///default`). Not the embedded driver (`qemu:///embed`): a process has one embedded root,
    /// and it is the local host's. Not `qemu+tcp` (no encryption, no authentication) nor `qemu+ext`/`qemu+unix`
    /// (a command or socket of the admin's choosing that the daemon would run as itself).
    public static func validate(uri: String) throws(VMSessionError) {
        guard !uri.isEmpty, uri.utf8.count <= maximumURIBytes else {
            throw VMSessionError(.invalidArgument, "'uri' must be a libvirt URI of 1 to \(maximumURIBytes) bytes.")
        }
        guard uri.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f }) else {
            throw VMSessionError(.invalidArgument, "'uri' must be printable ASCII without spaces; got '\(uri.prefix(80))'.")
        }
        guard let components = URLComponents(string: uri), let scheme = components.scheme?.lowercased() else {
            throw VMSessionError(.invalidArgument, "'uri' is not a URI; got '\(uri.prefix(80))'.")
        }
        let path = components.path
        switch scheme {
        case "qemu+ssh", "qemu+tls", "qemu+libssh2":
            guard let host = components.host, !host.isEmpty else {
                throw VMSessionError(.invalidArgument, "A \(scheme) URI names the host it reaches (\(scheme)://[user@]host/system); got '\(uri.prefix(80))'.")
            }
            guard path == "/system" || path == "/session" else {
                throw VMSessionError(.invalidArgument, "A \(scheme) URI ends in /system or /session; got '\(uri.prefix(80))'.")
            }
        case "qemu":
            guard components.host?.isEmpty ?? true, path == "/system" || path == "/session", components.query == nil else {
                throw VMSessionError(
                    .invalidArgument,
                    "A local qemu URI is qemu:///system or qemu:///session (the embedded driver is the local host's); got '\(uri.prefix(80))'.")
            }
        case "test":
            guard components.host?.isEmpty ?? true, path == "/default" else {
                throw VMSessionError(.invalidArgument, "The test driver's URI is test:///default; got '\(uri.prefix(80))'.")
            }
        default:
            throw VMSessionError(
                .invalidArgument,
                "'uri' must be a qemu+ssh://, qemu+tls://, qemu+libssh2://, qemu:///system, qemu:///session or test:///default URI; got '\(uri.prefix(80))'.")
        }
    }

    /// Labels: at most ``maximumLabels``; keys 1 to 63 lowercase letters, digits, '.', '_' and '-' (starting with
    /// a letter or digit), values up to 63 letters, digits, '.', '_' and '-'.
    public static func validate(labels: [String: String]) throws(VMSessionError) {
        guard labels.count <= maximumLabels else {
            throw VMSessionError(.invalidArgument, "A host has at most \(maximumLabels) labels; got \(labels.count).")
        }
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) {
            let keyBytes = Array(key.utf8)
            let keyValid = (1...63).contains(keyBytes.count) && isLowerAlphanumeric(keyBytes[0])
                && keyBytes.allSatisfy { isLowerAlphanumeric($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
            guard keyValid else {
                throw VMSessionError(
                    .invalidArgument,
                    "A label key is 1 to 63 lowercase letters, digits, '.', '_' and '-', starting with a letter or digit; got '\(key.prefix(80))'.")
            }
            let valueBytes = Array(value.utf8)
            let valueValid = valueBytes.count <= 63 && valueBytes.allSatisfy {
                isLowerAlphanumeric($0) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
                    || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-")
            }
            guard valueValid else {
                throw VMSessionError(
                    .invalidArgument, "The value of label '\(key)' is up to 63 letters, digits, '.', '_' and '-'; got '\(value.prefix(80))'.")
            }
        }
    }

    /// A host as the config file lists it (`hosts`, an array of strings; `--host`; `VMSESSIOND_HOSTS`):
    /// `NAME URI [KEY=VALUE]... [maxSessions=N]`, separated by spaces; `KEY=VALUE` are labels.
    public static func parse(spec: String) throws(VMSessionError) -> HostDefinition {
        let words = spec.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard words.count >= 2 else {
            throw VMSessionError(
                .invalidArgument, "A configured host is 'NAME URI [KEY=VALUE]... [maxSessions=N]'; got '\(spec.prefix(120))'.")
        }
        var labels: [String: String] = [:]
        var maxSessions: Int?
        for word in words.dropFirst(2) {
            guard let equals = word.firstIndex(of: "=") else {
                throw VMSessionError(.invalidArgument, "Host '\(words[0])': '\(word.prefix(80))' is not KEY=VALUE.")
            }
            let key = String(word[..<equals]), value = String(word[word.index(after: equals)...])
            if key == "maxSessions" {
                guard let limit = Int(value) else {
                    throw VMSessionError(.invalidArgument, "Host '\(words[0])': maxSessions must be a whole number; got '\(value.prefix(20))'.")
                }
                maxSessions = limit
            } else {
                guard labels[key] == nil else { throw VMSessionError(.invalidArgument, "Host '\(words[0])': label '\(key)' is given twice.") }
                labels[key] = value
            }
        }
        return try validated(name: words[0], uri: words[1], labels: labels, maxSessions: maxSessions, source: .config)
    }

    private static func isLowerAlphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}
