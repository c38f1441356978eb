import VMSessionCore

/// Fills a user-data template from `start`'s parameters, as the CernVM Web API did: `${name}` takes the
/// parameter's value, `${name:default}` falls back to the default, `$${` writes a literal `${`. Any other
/// `$` (shell variables such as `$HOME` or `$(date)`) is left alone. A parameter the template needs and
/// nobody gave is an error that names it: nothing is silently left empty.
public enum UserDataTemplate {
    /// Names are letters, digits and '_', not starting with a digit (like shell variables).
    public static func isValidName(_ name: Substring) -> Bool {
        guard let first = name.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
    }

    /// At most this many missing names are listed in the error (the count of the rest is given).
    static let missingNamesListed = 10

    /// Fills `template`. The output is bounded *while it is built*: a small template that names a large
    /// parameter many times (`${a}` × 200,000 with a 1 MiB `a`) is refused with `payload_too_large` as soon as
    /// the output would pass `maximumBytes`, so memory never grows past the limit.
    public static func render(
        _ template: String, parameters: [String: String], maximumBytes: Int = ContextSeed.maximumUserDataBytes
    ) throws(VMSessionError) -> String {
        for name in parameters.keys where !isValidName(Substring(name)) {
            throw VMSessionError(.invalidArgument, "Parameter names are letters, digits and '_', not starting with a digit; got '\(name)'.")
        }
        var output = ""
        output.reserveCapacity(min(template.utf8.count, maximumBytes))
        var missing: [String] = []
        var missingSeen: Set<Substring> = []
        var rest = Substring(template)
        func append(_ piece: some StringProtocol) throws(VMSessionError) {
            guard output.utf8.count + piece.utf8.count <= maximumBytes else {
                throw VMSessionError(
                    .payloadTooLarge,
                    "'userData' would be more than \(maximumBytes) bytes after filling in its parameters (the limit); "
                        + "send less user-data or shorter parameter values.")
            }
            output += piece
        }
        while let dollar = rest.firstIndex(of: "$") {
            try append(rest[..<dollar])
            let afterDollar = rest[rest.index(after: dollar)...]
            if afterDollar.hasPrefix("${") {
                try append("${")
                rest = afterDollar.dropFirst(2)
                continue
            }
            guard afterDollar.hasPrefix("{"), let close = afterDollar.firstIndex(of: "}") else {
                try append("$")
                rest = afterDollar
                continue
            }
            let body = afterDollar[afterDollar.index(after: afterDollar.startIndex)..<close]
            let name = body.prefix { $0 != ":" }
            guard isValidName(name) else {
                // Not ours (e.g. a shell's ${#array[@]}): keep it as written.
                try append("$")
                rest = afterDollar
                continue
            }
            if let value = parameters[String(name)] {
                try append(value)
            } else if name.endIndex < body.endIndex {
                try append(body[body.index(after: name.endIndex)...])
            } else if missingSeen.insert(name).inserted {
                missing.append(String(name))
            }
            rest = afterDollar[afterDollar.index(after: close)...]
        }
        try append(rest)
        guard missing.isEmpty else {
            var list = missing.prefix(missingNamesListed).map { "'\($0)'" }.joined(separator: ", ")
            if missing.count > missingNamesListed { list += " and \(missing.count - missingNamesListed) more" }
            throw VMSessionError(
                .invalidArgument,
                "The user-data needs the parameter\(missing.count > 1 ? "s" : "") \(list), which 'parameters' does not give and which has no default (write ${name:default}).")
        }
        return output
    }
}
