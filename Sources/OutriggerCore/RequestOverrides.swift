import NIOHTTP1
import OutriggerConfig

/// The local service's per-request overrides of the route's timeouts and retries:
/// `x-outrigger-timeout-ms`, `x-outrigger-per-try-timeout-ms`, `x-outrigger-retry-on` (conditions, comma
/// separated) and `x-outrigger-max-retries` (retries after the first try). A malformed value is ignored and
/// counted, never fatal. The headers never go upstream, whether honoured or not.
public struct RequestOverrides: Equatable, Sendable {
    public var timeout: Duration?
    public var perTryTimeout: Duration?
    public var retryOn: Set<RetryPolicy.Condition>?
    public var maxRetries: Int?
    /// Override headers present with a value that could not be used.
    public var malformed = 0

    public static let timeoutHeader = "x-outrigger-timeout-ms"
    public static let perTryTimeoutHeader = "x-outrigger-per-try-timeout-ms"
    public static let retryOnHeader = "x-outrigger-retry-on"
    public static let maxRetriesHeader = "x-outrigger-max-retries"
    public static let names = [timeoutHeader, perTryTimeoutHeader, retryOnHeader, maxRetriesHeader]

    public init() {}

    public init(_ headers: HTTPHeaders) {
        func milliseconds(_ name: String) -> Duration? {
            guard let text = headers.first(name: name) else { return nil }
            guard let value = Int(text.trimmingSpaces), value > 0, value <= 3_600_000 else {
                malformed += 1
                return nil
            }
            return .milliseconds(value)
        }
        timeout = milliseconds(Self.timeoutHeader)
        perTryTimeout = milliseconds(Self.perTryTimeoutHeader)
        if let text = headers.first(name: Self.retryOnHeader) {
            let tokens = text.split(separator: ",").map { String($0.trimmingSpaces) }
            let conditions = tokens.compactMap(RetryPolicy.Condition.init(rawValue:))
            if conditions.count == tokens.count && !tokens.isEmpty { retryOn = Set(conditions) } else { malformed += 1 }
        }
        if let text = headers.first(name: Self.maxRetriesHeader) {
            if let value = Int(text.trimmingSpaces), (0...9).contains(value) { maxRetries = value } else { malformed += 1 }
        }
    }

    /// The route's policy with these overrides applied.
    public func applied(to policy: RetryPolicy) -> RetryPolicy {
        var policy = policy
        if let retryOn {
            policy.retryOn = retryOn
            // Asking for conditions asks for retries: one, unless the route or a max says otherwise.
            if policy.attempts == 1 && maxRetries == nil { policy.attempts = 2 }
        }
        if let maxRetries { policy.attempts = maxRetries + 1 }
        if let perTryTimeout { policy.perTryTimeout = perTryTimeout }
        return policy
    }
}

extension StringProtocol {
    var trimmingSpaces: Substring {
        let characters = self[...]
        let start = characters.firstIndex { $0 != " " && $0 != "\t" } ?? characters.endIndex
        let end = characters.lastIndex { $0 != " " && $0 != "\t" }.map { characters.index(after: $0) } ?? start
        return Substring(characters[start..<Swift.max(start, end)])
    }
}
