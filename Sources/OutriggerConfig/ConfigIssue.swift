/// One problem found in a config file: where it is, which key, and what was expected.
///
/// Printed as `file:line:column: key.path: message`, the shape compilers and `nginx -t` use, so editors
/// can jump to it.
public struct ConfigIssue: Error, Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var keyPath: String
    public var message: String

    public init(file: String, line: Int, column: Int, keyPath: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.keyPath = keyPath
        self.message = message
    }

    public var description: String {
        let path = keyPath.isEmpty ? "" : "\(keyPath): "
        return "\(file):\(line):\(column): \(path)\(message)"
    }
}

/// Every issue found in one load; a config with any issue is never applied.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var issues: [ConfigIssue]

    public init(_ issues: [ConfigIssue]) {
        self.issues = issues
    }

    public var description: String {
        issues.map(\.description).joined(separator: "\n")
    }
}

/// Where one cluster endpoint is written in a config file.
public struct EndpointSite: Sendable, Hashable {
    public var cluster: String
    public var endpoint: HostPort
    public var file: String
    public var line: Int
    public var column: Int
    public var keyPath: String

    /// A warning about this endpoint, in the `file:line:column: key.path: message` shape of config errors.
    public func warning(_ message: String) -> String {
        "\(file):\(line):\(column): \(keyPath): warning: \(message)"
    }

    /// What to say of an endpoint whose name does not resolve (not an error: DNS may catch up).
    public static func doesNotResolve(_ endpoint: HostPort, cluster: String, error: String, retryEvery: Duration) -> String {
        "'\(endpoint)' does not resolve (\(error)); cluster '\(cluster)' starts without it and tries again every \(ConfigDuration.format(retryEvery))"
    }
}
