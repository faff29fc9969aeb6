import Foundation

/// The simplest dynamic endpoint source: a file listing a cluster's endpoints. The sidecar reads it at start
/// and on every change, and the cluster's endpoints change without a reload and without dropping a request.
///
/// Two forms, told apart by the file name:
/// - text (any name): one endpoint per line, `HOST:PORT [weight=N] [zone=Z] [priority=P]`; blank lines and
///   `#` comments are ignored;
/// - YAML (`.yaml`/`.yml`): a list of endpoints written as in a cluster's `endpoints` (`HOST:PORT` or
///   `{address, weight, zone, priority}`), at the top level or under an `endpoints` key.
public enum EndpointsFile {
    public typealias Entry = (endpoint: HostPort, metadata: EndpointMetadata)

    public static func parse(_ text: String, file: String) throws(ConfigErrors) -> [Entry] {
        let lowered = file.lowercased()
        if lowered.hasSuffix(".yaml") || lowered.hasSuffix(".yml") { return try parseYAML(text, file: file) }
        var entries: [Entry] = []
        var issues: [ConfigIssue] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.prefix { $0 != "#" }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard let first = fields.first else { continue }
            func issue(_ field: Substring, _ message: String) {
                let column = line.distance(from: line.startIndex, to: field.startIndex) + 1
                issues.append(ConfigIssue(file: file, line: index + 1, column: column, keyPath: "", message: message))
            }
            guard let endpoint = HostPort(parsing: String(first)), endpoint.port > 0 else {
                issue(first, "expected HOST:PORT such as 10.0.0.5:8080, found '\(first)'")
                continue
            }
            var metadata = EndpointMetadata()
            for option in fields.dropFirst() {
                let parts = option.split(separator: "=", maxSplits: 1)
                let value = parts.count == 2 ? String(parts[1]) : ""
                switch parts.first {
                case "weight" where Int(value).map((1...1_000_000).contains) == true:
                    metadata.weight = Int(value)!
                case "priority" where Int(value).map((0...127).contains) == true:
                    metadata.priority = Int(value)!
                case "zone" where !value.isEmpty:
                    metadata.zone = value
                default:
                    issue(option, "expected weight=N (1...1000000), zone=NAME or priority=P (0...127) after the endpoint, found '\(option)'")
                }
            }
            entries.append((endpoint, metadata))
        }
        if !issues.isEmpty { throw ConfigErrors(issues) }
        return entries
    }

    private static func parseYAML(_ text: String, file: String) throws(ConfigErrors) -> [Entry] {
        guard let root = try SidecarConfigDecoder.compose(text, file: file) else { return [] }
        let decoder = SidecarConfigDecoder(reader: YAMLReader(file: file))
        let reader = decoder.reader
        var list = root
        var path = ""
        if case .mapping = root {
            guard let fields = reader.fields(root, "", allowed: ["endpoints"]), let node = reader.required(fields, "endpoints") else {
                throw ConfigErrors(reader.issues)
            }
            list = node
            path = "endpoints"
        }
        var entries: [Entry] = []
        if let items = reader.sequence(list, path) {
            for (index, item) in items.enumerated() {
                if let entry = decoder.decodeEndpoint(item, "\(path)[\(index)]") { entries.append(entry) }
            }
        }
        if !reader.issues.isEmpty { throw ConfigErrors(reader.issues) }
        return entries
    }

    public static func load(_ path: String) throws(ConfigErrors) -> [Entry] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigErrors([ConfigIssue(file: path, line: 1, column: 1, keyPath: "", message: "cannot read the endpoints file")])
        }
        return try parse(text, file: path)
    }
}

extension ClusterConfig {
    /// This cluster with the endpoints of its endpoints file added after its own (duplicates left out).
    public func adding(_ entries: [EndpointsFile.Entry]) -> ClusterConfig {
        guard !entries.isEmpty else { return self }
        var merged = self
        for (endpoint, metadata) in entries where !merged.endpoints.contains(endpoint) {
            merged.endpoints.append(endpoint)
            if metadata != .default { merged.endpointMetadata[endpoint] = metadata }
        }
        return merged
    }
}
