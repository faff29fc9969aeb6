import Yams

/// Reads a composed YAML node tree into typed values, collecting every problem with its line, column
/// and key path instead of stopping at the first. Used only while loading config, never on the hot path.
final class YAMLReader {
    let file: String
    private(set) var issues: [ConfigIssue] = []
    /// Where each cluster's endpoints were written (for warnings about them later, such as a name that
    /// does not resolve).
    var endpointSites: [EndpointSite] = []

    init(file: String) {
        self.file = file
    }

    func report(_ node: Node?, _ path: String, _ message: String) {
        let mark = node?.mark
        issues.append(ConfigIssue(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, keyPath: path, message: message))
    }

    /// A mapping whose keys were checked against the allowed ones.
    struct Fields {
        let node: Node
        let path: String
        let values: [String: Node]

        subscript(key: String) -> Node? { values[key] }

        func path(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }
    }

    /// Checks `node` is a mapping whose keys are all in `allowed`; unknown keys get a "did you mean".
    func fields(_ node: Node, _ path: String, allowed: [String]) -> Fields? {
        guard case .mapping(let mapping) = node else {
            report(node, path, "expected a mapping with keys \(allowed.joined(separator: ", ")), found \(describe(node))")
            return nil
        }
        var values: [String: Node] = [:]
        for (keyNode, value) in mapping {
            guard let key = keyNode.scalar?.string else {
                report(keyNode, path, "expected a string key")
                continue
            }
            let keyPath = path.isEmpty ? key : "\(path).\(key)"
            guard allowed.contains(key) else {
                var message = "unknown key '\(key)'"
                if let suggestion = Self.closest(to: key, among: allowed) {
                    message += "; did you mean '\(suggestion)'?"
                } else {
                    message += "; expected one of \(allowed.joined(separator: ", "))"
                }
                report(keyNode, keyPath, message)
                continue
            }
            if values[key] != nil {
                report(keyNode, keyPath, "duplicate key '\(key)'")
                continue
            }
            values[key] = value
        }
        return Fields(node: node, path: path, values: values)
    }

    /// The value of a required key, or nil after reporting it missing.
    func required(_ fields: Fields, _ key: String) -> Node? {
        if let value = fields[key] { return value }
        report(fields.node, fields.path(key), "missing required key '\(key)'")
        return nil
    }

    func sequence(_ node: Node, _ path: String) -> [Node]? {
        guard case .sequence(let sequence) = node else {
            report(node, path, "expected a list, found \(describe(node))")
            return nil
        }
        return Array(sequence)
    }

    func string(_ node: Node, _ path: String, allowEmpty: Bool = false) -> String? {
        guard case .scalar(let scalar) = node, describe(node) != "nothing" else {
            report(node, path, "expected a string, found \(describe(node))")
            return nil
        }
        if !allowEmpty && scalar.string.isEmpty {
            report(node, path, "expected a non-empty string")
            return nil
        }
        return scalar.string
    }

    /// The integer at `key` of `fields`, if the key is there and its value fits.
    func int(_ fields: Fields, _ key: String, range: ClosedRange<Int>) -> Int? {
        fields[key].flatMap { int($0, fields.path(key), range: range) }
    }

    /// The duration at `key` of `fields`, if the key is there and its value is one.
    func duration(_ fields: Fields, _ key: String, allowZero: Bool = false) -> Duration? {
        fields[key].flatMap { duration($0, fields.path(key), allowZero: allowZero) }
    }

    /// The boolean at `key` of `fields`, if the key is there and its value is one.
    func bool(_ fields: Fields, _ key: String) -> Bool? {
        fields[key].flatMap { bool($0, fields.path(key)) }
    }

    func int(_ node: Node, _ path: String, range: ClosedRange<Int>) -> Int? {
        guard case .scalar(let scalar) = node, let value = Int(scalar.string) else {
            report(node, path, "expected an integer, found \(describe(node))")
            return nil
        }
        guard range.contains(value) else {
            report(node, path, "expected an integer in \(Self.describe(range)), found \(value)")
            return nil
        }
        return value
    }

    /// A share: a number from 0 to 1, or a percentage (`1%`, `0.5%`).
    func fraction(_ node: Node, _ path: String) -> Double? {
        guard case .scalar(let scalar) = node else {
            report(node, path, "expected a share from 0 to 1 or a percentage, found \(describe(node))")
            return nil
        }
        var text = Substring(scalar.string)
        let isPercentage = text.hasSuffix("%")
        if isPercentage { text = text.dropLast() }
        guard let number = Double(text), number.isFinite, number >= 0, number <= (isPercentage ? 100 : 1) else {
            report(node, path, "expected a share from 0 to 1 or a percentage from 0% to 100%, found '\(scalar.string)'")
            return nil
        }
        return isPercentage ? number / 100 : number
    }

    func bool(_ node: Node, _ path: String) -> Bool? {
        guard case .scalar(let scalar) = node else {
            report(node, path, "expected true or false, found \(describe(node))")
            return nil
        }
        switch scalar.string {
        case "true", "True", "TRUE", "yes", "on": return true
        case "false", "False", "FALSE", "no", "off": return false
        default:
            report(node, path, "expected true or false, found '\(scalar.string)'")
            return nil
        }
    }

    /// A positive duration such as `250ms` or `5s`.
    /// - Parameter allowZero: for settings where zero means "none" (a jitter), not "never" or "at once".
    func duration(_ node: Node, _ path: String, allowZero: Bool = false) -> Duration? {
        guard case .scalar(let scalar) = node, let value = ConfigDuration.parse(scalar.string) else {
            report(node, path, "expected a duration such as 250ms, 5s or 1m, found \(describe(node))")
            return nil
        }
        guard value > .zero || (allowZero && value == .zero) else {
            report(node, path, "expected a duration greater than zero, found '\(scalar.string)'")
            return nil
        }
        return value
    }

    /// A size in bytes: `65536`, `64KiB`, `1MiB`, `1GiB`.
    func byteSize(_ node: Node, _ path: String) -> Int? {
        guard case .scalar(let scalar) = node else {
            report(node, path, "expected a size such as 65536, 64KiB or 1MiB, found \(describe(node))")
            return nil
        }
        let text = scalar.string
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("B", 1), ("", 1)]
        for (suffix, multiplier) in units where text.hasSuffix(suffix) {
            if let number = Int(text.dropLast(suffix.count)), number > 0 {
                return number * multiplier
            }
        }
        report(node, path, "expected a positive size such as 65536, 64KiB or 1MiB, found '\(text)'")
        return nil
    }

    func hostPort(_ node: Node, _ path: String) -> HostPort? {
        guard let text = string(node, path) else { return nil }
        guard let value = HostPort(parsing: text) else {
            report(node, path, "expected HOST:PORT such as 127.0.0.1:8080 or [::1]:8080, found '\(text)'")
            return nil
        }
        return value
    }

    func oneOf<Value: RawRepresentable & CaseIterable>(_ node: Node, _ path: String, _ type: Value.Type) -> Value?
    where Value.RawValue == String {
        guard let text = string(node, path) else { return nil }
        if let value = Value(rawValue: text) { return value }
        let names = Value.allCases.map(\.rawValue)
        var message = "expected one of \(names.joined(separator: ", ")), found '\(text)'"
        if let suggestion = Self.closest(to: text, among: names) { message += "; did you mean '\(suggestion)'?" }
        report(node, path, message)
        return nil
    }

    func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain && (scalar.string.isEmpty || scalar.string == "~" || scalar.string == "null") {
                return "nothing"
            }
            return "'\(scalar.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    private static func describe(_ range: ClosedRange<Int>) -> String {
        range.upperBound == Int.max ? "\(range.lowerBound)..." : "\(range.lowerBound)...\(range.upperBound)"
    }

    /// The allowed word nearest to `word` by edit distance, if it is near enough to be a typo.
    static func closest(to word: String, among candidates: [String]) -> String? {
        let lowered = word.lowercased()
        let scored = candidates.map { ($0, editDistance(lowered, $0.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
        return best.1 <= max(2, word.count / 3) ? best.0 : nil
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
