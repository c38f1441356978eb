/// Rules for the user-chosen strings that name things (session names, image versions): a conservative
/// alphabet that cannot carry XML, shell or path syntax, checked at the edge.
public enum Identifier {
    /// Letters, digits, '.', '_' and '-', not starting with '.' or '-'.
    public static func isValid(_ value: String, maxLength: Int) -> Bool {
        guard !value.isEmpty, value.utf8.count <= maxLength, let first = value.unicodeScalars.first else { return false }
        guard first != ".", first != "-" else { return false }
        return value.unicodeScalars.allSatisfy { isAlphanumeric($0) || $0 == "." || $0 == "_" || $0 == "-" }
    }

    /// Session names may also hold spaces, ':' and '@' (e.g. "My App: run 3"), but no markup or shell syntax.
    public static func isValidSessionName(_ value: String) -> Bool {
        guard !value.isEmpty, value.utf8.count <= 128, value.first != " ", value.last != " " else { return false }
        return value.unicodeScalars.allSatisfy {
            isAlphanumeric($0) || " ._-:@+".unicodeScalars.contains($0)
        }
    }

    private static func isAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
    }
}
