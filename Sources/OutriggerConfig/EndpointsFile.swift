import Foundation

/// The simplest dynamic endpoint source: a file with one endpoint per line, `HOST:PORT` or
/// `HOST:PORT weight=N`; blank lines and `#` comments are ignored. The sidecar reads it at start and on
/// every change, and the cluster's endpoints change without a reload and without dropping a request.
public enum EndpointsFile {
    public typealias Entry = (endpoint: HostPort, weight: Int)

    public static func parse(_ text: String, file: String) throws(ConfigErrors) -> [Entry] {
        var entries: [Entry] = []
        var issues: [ConfigIssue] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.prefix { $0 != "#" }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard let first = fields.first else { continue }
            let column = line.distance(from: line.startIndex, to: first.startIndex) + 1
            func issue(_ message: String) {
                issues.append(ConfigIssue(file: file, line: index + 1, column: column, keyPath: "", message: message))
            }
            guard let endpoint = HostPort(parsing: String(first)), endpoint.port > 0 else {
                issue("expected HOST:PORT such as 10.0.0.5:8080, found '\(first)'")
                continue
            }
            var weight = 1
            for option in fields.dropFirst() {
                guard option.hasPrefix("weight="), let value = Int(option.dropFirst("weight=".count)), (1...1_000_000).contains(value) else {
                    issue("expected weight=N with N in 1...1000000 after the endpoint, found '\(option)'")
                    continue
                }
                weight = value
            }
            entries.append((endpoint, weight))
        }
        if !issues.isEmpty { throw ConfigErrors(issues) }
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
        for (endpoint, weight) in entries where !merged.endpoints.contains(endpoint) {
            merged.endpoints.append(endpoint)
            if weight != 1 { merged.endpointWeights[endpoint] = weight }
        }
        return merged
    }
}
