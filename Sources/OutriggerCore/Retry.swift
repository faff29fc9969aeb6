import NIOHTTP1
import OutriggerConfig

/// How one attempt at a request ended, as far as retrying is concerned.
public enum AttemptOutcome: Sendable, Equatable {
    /// No connection could be made: the request never left.
    case connectFailure
    /// HTTP/2 REFUSED_STREAM: the upstream did not process it.
    case refusedStream
    /// The connection or stream broke before a response head.
    case reset
    /// The per-try timeout expired before a response head.
    case perTryTimeout
    /// A response head arrived (the gRPC status when the head carries one; Retry-After in seconds).
    case response(status: Int, grpcStatus: Int?, retryAfterSeconds: Int?)

    /// The request provably never reached the upstream application: safe to resend whatever its method.
    public var neverReachedUpstream: Bool {
        self == .connectFailure || self == .refusedStream
    }
}

/// The retry decision for one attempt: a pure function of the policy, the outcome and the request.
public enum RetryDecision: Equatable, Sendable {
    /// Try again after `delay` nanoseconds; `reason` names the condition (for stats and logs).
    case retry(after: Int64, reason: String)
    /// Do not; `reason` says why not when a condition matched (nil when nothing asked for a retry).
    case stop(reason: String?)

    /// - Parameters:
    ///   - triesSoFar: attempts made, this one included.
    ///   - idempotent: the method is idempotent or the request carries `Idempotency-Key`.
    ///   - replayable: the whole body so far is still held for replay.
    ///   - budgetRefusal: why the cluster's limits refuse a retry (`budget`, `maxActiveRetries`), nil when they
    ///     allow it; asked last, only when everything else says retry (asking may spend budget).
    public static func decide(policy: RetryPolicy, outcome: AttemptOutcome, triesSoFar: Int, idempotent: Bool, replayable: Bool,
                              random: inout FastRandom, budgetRefusal: () -> String?) -> RetryDecision {
        guard let condition = matchedCondition(policy, outcome) else { return .stop(reason: nil) }
        guard triesSoFar < policy.attempts else { return .stop(reason: "attempts") }
        // A gRPC status the route lists is its opt-in for gRPC calls (always POSTs), as gRPC's own retry policy
        // retries the statuses its service config lists.
        let optedIn = policy.retryNonIdempotent || condition.grpcStatus != nil
        guard outcome.neverReachedUpstream || idempotent || optedIn else { return .stop(reason: "not_idempotent") }
        guard replayable else { return .stop(reason: "body_too_large") }
        var delay = backoff(retry: triesSoFar, base: policy.backoffBase, max: policy.backoffMax, random: &random)
        if case .response(_, _, let retryAfter?) = outcome {
            // The upstream's number: past Int64 in nanoseconds it is past any cap (it trapped the process).
            let (wanted, overflow) = Int64(retryAfter).multipliedReportingOverflow(by: 1_000_000_000)
            guard !overflow, wanted <= policy.retryAfterMax.nanoseconds else { return .stop(reason: "retry_after") }
            delay = max(delay, wanted)
        }
        if let refusal = budgetRefusal() { return .stop(reason: refusal) }
        return .retry(after: delay, reason: condition.rawValue)
    }

    /// The first of the policy's conditions the outcome meets.
    public static func matchedCondition(_ policy: RetryPolicy, _ outcome: AttemptOutcome) -> RetryPolicy.Condition? {
        let on = policy.retryOn
        switch outcome {
        case .connectFailure:
            return on.contains(.connectFailure) ? .connectFailure : on.contains(.gatewayError) ? .gatewayError : nil
        case .refusedStream:
            return on.contains(.refusedStream) ? .refusedStream : on.contains(.reset) ? .reset : nil
        case .reset:
            return on.contains(.reset) ? .reset : on.contains(.gatewayError) ? .gatewayError : nil
        case .perTryTimeout:
            return on.contains(.fiveXX) ? .fiveXX : on.contains(.gatewayError) ? .gatewayError : nil
        case .response(let status, let grpcStatus, _):
            if let grpcStatus, let condition = on.first(where: { $0.grpcStatus == grpcStatus }) { return condition }
            if status >= 500 && on.contains(.fiveXX) { return .fiveXX }
            if RetryPolicy.Condition.isGatewayError(status) && on.contains(.gatewayError) { return .gatewayError }
            if on.contains(.retriableStatusCodes) && policy.retriableStatusCodes.contains(status) { return .retriableStatusCodes }
            return nil
        }
    }

    /// Fully jittered exponential backoff, in nanoseconds: uniform in [0, min(max, base × 2^(retry-1))).
    public static func backoff(retry: Int, base: Duration, max: Duration, random: inout FastRandom) -> Int64 {
        let exponent = min(retry - 1, 30)
        let ceiling = min(max.nanoseconds, base.nanoseconds << Int64(exponent))
        return ceiling > 0 ? Int64(random.next() % UInt64(ceiling)) : 0
    }

    /// RFC 9110 §9.2.2 idempotent methods, or a request that says it may be repeated.
    public static func isIdempotent(_ head: HTTPRequestHead) -> Bool {
        switch head.method {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: return true
        default: return head.headers.contains(name: "idempotency-key")
        }
    }
}

/// One event loop's share of a cluster's retry budget: retries over the last `window` stay under
/// `percent` % of the requests in it plus `minRetriesPerSecond` (divided among the loops), counted in
/// one-second buckets. Per loop so the request path takes no lock; the loops' shares add up to the budget.
public struct RetryBudget: Sendable {
    private let percent: Int
    private let floor: Double
    /// Requests (first) and retries (second).
    private var counts: SlidingWindowCounts

    public init(_ config: RetryBudgetConfig, loops: Int = 1) {
        let window = max(Int(config.window.components.seconds), 1)
        percent = config.percent
        floor = Double(config.minRetriesPerSecond * window) / Double(max(loops, 1))
        counts = SlidingWindowCounts(windowSeconds: window)
    }

    /// A request (not a retry) was sent.
    public mutating func recordRequest(now: UInt64) {
        counts.add(first: 1, now: now)
    }

    /// Takes one retry from the budget if it has one.
    public mutating func withdraw(now: UInt64) -> Bool {
        let (sent, retried) = counts.totals(now: now)
        guard Double(retried) < Double(sent * percent) / 100 + floor else { return false }
        counts.add(second: 1, now: now)
        return true
    }
}
