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

    public static func render(_ template: String, parameters: [String: String]) throws(VMSessionError) -> String {
        for name in parameters.keys where !isValidName(Substring(name)) {
            throw VMSessionError(.invalidArgument, "Parameter names are letters, digits and '_', not starting with a digit; got '\(name)'.")
        }
        var output = ""
        output.reserveCapacity(template.utf8.count)
        var missing: [String] = []
        var rest = Substring(template)
        while let dollar = rest.firstIndex(of: "$") {
            output += rest[..<dollar]
            let afterDollar = rest[rest.index(after: dollar)...]
            if afterDollar.hasPrefix("${") {
                output += "${"
                rest = afterDollar.dropFirst(2)
                continue
            }
            guard afterDollar.hasPrefix("{"), let close = afterDollar.firstIndex(of: "}") else {
                output += "$"
                rest = afterDollar
                continue
            }
            let body = afterDollar[afterDollar.index(after: afterDollar.startIndex)..<close]
            let name = body.prefix { $0 != ":" }
            guard isValidName(name) else {
                // Not ours (e.g. a shell's ${#array[@]}): keep it as written.
                output += "$"
                rest = afterDollar
                continue
            }
            if let value = parameters[String(name)] {
                output += value
            } else if name.endIndex < body.endIndex {
                output += body[body.index(after: name.endIndex)...]
            } else if !missing.contains(String(name)) {
                missing.append(String(name))
            }
            rest = afterDollar[afterDollar.index(after: close)...]
        }
        output += rest
        guard missing.isEmpty else {
            let list = missing.map { "'\($0)'" }.joined(separator: ", ")
            throw VMSessionError(
                .invalidArgument,
                "The user-data needs the parameter\(missing.count > 1 ? "s" : "") \(list), which 'parameters' does not give and which has no default (write ${name:default}).")
        }
        return output
    }
}
