/// When and how a route's requests are tried again (`retries` on a route).
public struct RetryPolicy: Sendable, Hashable, Encodable {
    /// What makes an attempt worth another (Envoy's names; gRPC ones read the status from headers and trailers).
    public enum Condition: String, Sendable, Hashable, Encodable, CaseIterable, Comparable {
        case fiveXX = "5xx"
        /// 502, 503, 504 (`isGatewayError`).
        case gatewayError = "gateway-error"
        /// The connection or stream broke before a response head.
        case reset
        case connectFailure = "connect-failure"
        /// HTTP/2 REFUSED_STREAM (the upstream never processed it).
        case refusedStream = "refused-stream"
        /// A status in `retriableStatusCodes`.
        case retriableStatusCodes = "retriable-status-codes"
        case cancelled
        case deadlineExceeded = "deadline-exceeded"
        case `internal`
        case resourceExhausted = "resource-exhausted"
        case unavailable

        public static func < (lhs: Condition, rhs: Condition) -> Bool { lhs.rawValue < rhs.rawValue }

        /// 502, 503 and 504: what `gateway-error` and outlier detection's gateway failures count.
        public static func isGatewayError(_ status: Int) -> Bool { (502...504).contains(status) }

        /// The gRPC status code this condition retries, if it is a gRPC one.
        public var grpcStatus: Int? {
            switch self {
            case .cancelled: 1
            case .deadlineExceeded: 4
            case .resourceExhausted: 8
            case .internal: 13
            case .unavailable: 14
            default: nil
            }
        }
    }

    /// Tries in all, the first included (1: never retried).
    public var attempts: Int
    public var retryOn: Set<Condition>
    public var retriableStatusCodes: Set<Int>
    /// Each try's own timeout (nil: only the route timeout).
    public var perTryTimeout: Duration?
    /// Fully jittered exponential backoff: before retry n, a random wait in [0, min(max, base × 2^(n-1))).
    public var backoffBase: Duration
    public var backoffMax: Duration
    /// A `Retry-After` answer is waited for, up to this long; longer ones are not retried.
    public var retryAfterMax: Duration
    /// Request bodies are kept up to this size for replay; a larger one is not retried.
    public var replayBufferBytes: Int
    /// Retry requests that may have reached the upstream even if not idempotent (POST, PATCH).
    public var retryNonIdempotent: Bool
    /// When a try's `perTryTimeout` passes, the next try races it instead of replacing it: the first answer
    /// the route would not retry wins and the other is cancelled (needs `perTryTimeout`; a request still
    /// sending its body is retried as usual).
    public var hedgeOnPerTryTimeout: Bool

    public static let defaultBackoffBase: Duration = .milliseconds(25)
    public static let defaultBackoffMax: Duration = .milliseconds(250)
    public static let defaultRetryAfterMax: Duration = .seconds(1)
    public static let defaultReplayBufferBytes = 64 * 1024
    /// Without a `retries` block: one try, except the transparent retry of a request that provably never
    /// reached the upstream (connect failure, refused stream).
    public static let none = RetryPolicy(attempts: 1, retryOn: [])

    public init(attempts: Int, retryOn: Set<Condition>, retriableStatusCodes: Set<Int> = [], perTryTimeout: Duration? = nil,
                backoffBase: Duration = RetryPolicy.defaultBackoffBase, backoffMax: Duration = RetryPolicy.defaultBackoffMax,
                retryAfterMax: Duration = RetryPolicy.defaultRetryAfterMax, replayBufferBytes: Int = RetryPolicy.defaultReplayBufferBytes,
                retryNonIdempotent: Bool = false, hedgeOnPerTryTimeout: Bool = false) {
        self.attempts = attempts
        self.retryOn = retryOn
        self.retriableStatusCodes = retriableStatusCodes
        self.perTryTimeout = perTryTimeout
        self.backoffBase = backoffBase
        self.backoffMax = backoffMax
        self.retryAfterMax = retryAfterMax
        self.replayBufferBytes = replayBufferBytes
        self.retryNonIdempotent = retryNonIdempotent
        self.hedgeOnPerTryTimeout = hedgeOnPerTryTimeout
    }

    enum CodingKeys: String, CodingKey {
        case attempts, retryOn, retriableStatusCodes, perTryTimeout, backoff, retryAfterMax, replayBufferBytes, retryNonIdempotent
        case hedgeOnPerTryTimeout
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(attempts, forKey: .attempts)
        try container.encode(retryOn.sorted().map(\.rawValue), forKey: .retryOn)
        if !retriableStatusCodes.isEmpty { try container.encode(retriableStatusCodes.sorted(), forKey: .retriableStatusCodes) }
        try container.encodeIfPresent(perTryTimeout.map(ConfigDuration.format), forKey: .perTryTimeout)
        try container.encode(["base": ConfigDuration.format(backoffBase), "max": ConfigDuration.format(backoffMax)], forKey: .backoff)
        try container.encode(ConfigDuration.format(retryAfterMax), forKey: .retryAfterMax)
        try container.encode(replayBufferBytes, forKey: .replayBufferBytes)
        try container.encode(retryNonIdempotent, forKey: .retryNonIdempotent)
        try container.encode(hedgeOnPerTryTimeout, forKey: .hedgeOnPerTryTimeout)
    }
}

/// A cluster's retry budget: retries stay under `percent` % of requests over `window`, plus
/// `minRetriesPerSecond`, so a failing cluster sees at most ~(1 + percent/100)× the offered load.
public struct RetryBudgetConfig: Sendable, Hashable, Encodable {
    public var percent: Int
    public var minRetriesPerSecond: Int
    public var window: Duration

    public init(percent: Int = 20, minRetriesPerSecond: Int = 10, window: Duration = .seconds(10)) {
        self.percent = percent
        self.minRetriesPerSecond = minRetriesPerSecond
        self.window = window
    }

    enum CodingKeys: String, CodingKey { case percent, minRetriesPerSecond, window }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(percent, forKey: .percent)
        try container.encode(minRetriesPerSecond, forKey: .minRetriesPerSecond)
        try container.encode(ConfigDuration.format(window), forKey: .window)
    }
}

/// Passive health: endpoints that fail in a row are ejected (taken out of selection) for a while.
public struct OutlierDetectionConfig: Sendable, Hashable, Encodable {
    /// 5xx answers and local failures (connect failure, reset, timeout) in a row that eject (0: off).
    public var consecutive5xx: Int
    /// 502/503/504 and local failures in a row that eject (0: off).
    public var consecutiveGatewayFailure: Int
    /// An ejection lasts base × the times the endpoint was ejected, at most `maxEjectionTime`.
    public var baseEjectionTime: Duration
    public var maxEjectionTime: Duration
    /// At most this percentage of the cluster's endpoints (rounded down) is ejected at once; 0: never.
    public var maxEjectionPercent: Int
    /// Failure-percentage ejection, judged every `interval`: an endpoint with at least `failurePercentageRequestVolume`
    /// requests in it, failing at least `failurePercentageThreshold` % of them (0: off), is ejected — when at least
    /// `failurePercentageMinimumHosts` endpoints had that volume.
    public var interval: Duration
    public var failurePercentageThreshold: Int
    public var failurePercentageMinimumHosts: Int
    public var failurePercentageRequestVolume: Int
    /// Success-rate ejection, judged every `interval` as Envoy does: among the endpoints with at least
    /// `successRateRequestVolume` requests in it — when there are at least `successRateMinimumHosts` — one whose
    /// success rate is below mean − stdev × `successRateStdevFactor` / 1000 is ejected (0: off).
    public var successRateStdevFactor: Int
    public var successRateMinimumHosts: Int
    public var successRateRequestVolume: Int

    /// Whether the interval's per-endpoint request and failure counts are needed.
    public var judgesIntervals: Bool { failurePercentageThreshold > 0 || successRateStdevFactor > 0 }

    public init(consecutive5xx: Int = 5, consecutiveGatewayFailure: Int = 0, baseEjectionTime: Duration = .seconds(30),
                maxEjectionTime: Duration = .seconds(300), maxEjectionPercent: Int = 50, interval: Duration = .seconds(10),
                failurePercentageThreshold: Int = 0, failurePercentageMinimumHosts: Int = 5, failurePercentageRequestVolume: Int = 50,
                successRateStdevFactor: Int = 1900, successRateMinimumHosts: Int = 5, successRateRequestVolume: Int = 100) {
        self.successRateStdevFactor = successRateStdevFactor
        self.successRateMinimumHosts = successRateMinimumHosts
        self.successRateRequestVolume = successRateRequestVolume
        self.interval = interval
        self.failurePercentageThreshold = failurePercentageThreshold
        self.failurePercentageMinimumHosts = failurePercentageMinimumHosts
        self.failurePercentageRequestVolume = failurePercentageRequestVolume
        self.consecutive5xx = consecutive5xx
        self.consecutiveGatewayFailure = consecutiveGatewayFailure
        self.baseEjectionTime = baseEjectionTime
        self.maxEjectionTime = maxEjectionTime
        self.maxEjectionPercent = maxEjectionPercent
    }

    enum CodingKeys: String, CodingKey {
        case consecutive5xx, consecutiveGatewayFailure, baseEjectionTime, maxEjectionTime, maxEjectionPercent
        case interval, failurePercentageThreshold, failurePercentageMinimumHosts, failurePercentageRequestVolume
        case successRateStdevFactor, successRateMinimumHosts, successRateRequestVolume
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(consecutive5xx, forKey: .consecutive5xx)
        try container.encode(consecutiveGatewayFailure, forKey: .consecutiveGatewayFailure)
        try container.encode(ConfigDuration.format(baseEjectionTime), forKey: .baseEjectionTime)
        try container.encode(ConfigDuration.format(maxEjectionTime), forKey: .maxEjectionTime)
        try container.encode(maxEjectionPercent, forKey: .maxEjectionPercent)
        try container.encode(ConfigDuration.format(interval), forKey: .interval)
        try container.encode(failurePercentageThreshold, forKey: .failurePercentageThreshold)
        try container.encode(failurePercentageMinimumHosts, forKey: .failurePercentageMinimumHosts)
        try container.encode(failurePercentageRequestVolume, forKey: .failurePercentageRequestVolume)
        try container.encode(successRateStdevFactor, forKey: .successRateStdevFactor)
        try container.encode(successRateMinimumHosts, forKey: .successRateMinimumHosts)
        try container.encode(successRateRequestVolume, forKey: .successRateRequestVolume)
    }
}

/// What a route serves when its cluster has no endpoint to send a request to (degradation).
public enum RouteFallback: Sendable, Hashable, Encodable {
    /// Another cluster takes the request.
    case cluster(String)
    /// A fixed answer.
    case response(status: Int, headers: [HeaderValue], body: String)

    enum CodingKeys: String, CodingKey { case cluster, status, headers, body }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .cluster(let name):
            try container.encode(name, forKey: .cluster)
        case .response(let status, let headers, let body):
            try container.encode(status, forKey: .status)
            try container.encode(Dictionary(headers.map { ($0.name, $0.value) }) { $1 }, forKey: .headers)
            try container.encode(body, forKey: .body)
        }
    }
}

/// A cluster's limits (Envoy's circuit-breaker thresholds, named apart from per-endpoint breakers): past one,
/// a request is answered at once with 503 `overflow` instead of queueing. Connections and pending requests
/// are limited per endpoint and event loop by the cluster's `pool` settings.
public struct ClusterLimits: Sendable, Hashable, Encodable {
    /// Requests in flight to the cluster, across event loops.
    public var maxRequests: Int
    /// Retries in flight at once, across event loops; past it a failed try is not retried.
    public var maxActiveRetries: Int
    /// Upstream connections open or opening, across endpoints and event loops. At the limit a request waits
    /// for one of its endpoint pool's connections, or overflows when that pool has none.
    public var maxConnections: Int
    /// Requests waiting for a connection, across endpoints and event loops (each pool also has its own cap,
    /// `pool.maxPendingRequests`).
    public var maxPendingRequests: Int

    public init(maxRequests: Int = 100_000, maxActiveRetries: Int = 64, maxConnections: Int = 100_000, maxPendingRequests: Int = 100_000) {
        self.maxRequests = maxRequests
        self.maxActiveRetries = maxActiveRetries
        self.maxConnections = maxConnections
        self.maxPendingRequests = maxPendingRequests
    }
}

/// Per-endpoint circuit breakers (`breakers` on a cluster; off without it).
public struct BreakerConfig: Sendable, Hashable, Encodable {
    /// Failures in a row that open the breaker (0: only the rate counts).
    public var consecutiveFailures: Int
    /// A failure rate (percent) over `window` that opens it once `minimumRequests` were seen (0: off).
    public var failureRatePercent: Int
    public var minimumRequests: Int
    public var window: Duration
    /// The first open time; each reopening doubles it, up to `maxOpenTime` (plus up to 10 % jitter).
    public var openTime: Duration
    public var maxOpenTime: Duration
    /// Probe requests admitted at once while half-open.
    public var halfOpenRequests: Int

    public init(consecutiveFailures: Int = 5, failureRatePercent: Int = 50, minimumRequests: Int = 20, window: Duration = .seconds(10),
                openTime: Duration = .seconds(5), maxOpenTime: Duration = .seconds(60), halfOpenRequests: Int = 1) {
        self.consecutiveFailures = consecutiveFailures
        self.failureRatePercent = failureRatePercent
        self.minimumRequests = minimumRequests
        self.window = window
        self.openTime = openTime
        self.maxOpenTime = maxOpenTime
        self.halfOpenRequests = halfOpenRequests
    }

    enum CodingKeys: String, CodingKey {
        case consecutiveFailures, failureRatePercent, minimumRequests, window, openTime, maxOpenTime, halfOpenRequests
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(consecutiveFailures, forKey: .consecutiveFailures)
        try container.encode(failureRatePercent, forKey: .failureRatePercent)
        try container.encode(minimumRequests, forKey: .minimumRequests)
        try container.encode(ConfigDuration.format(window), forKey: .window)
        try container.encode(ConfigDuration.format(openTime), forKey: .openTime)
        try container.encode(ConfigDuration.format(maxOpenTime), forKey: .maxOpenTime)
        try container.encode(halfOpenRequests, forKey: .halfOpenRequests)
    }
}
