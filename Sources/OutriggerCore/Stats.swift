import Atomics
import NIOConcurrencyHelpers
import OutriggerConfig

/// A monotonically increasing count, safe to bump from any event loop.
public final class Counter: Sendable {
    private let value = ManagedAtomic<Int>(0)

    public init() {}

    @inline(__always)
    public func increment(by amount: Int = 1) {
        value.wrappingIncrement(by: amount, ordering: .relaxed)
    }

    public var current: Int { value.load(ordering: .relaxed) }
}

/// A value that goes up and down (active connections, active requests).
public final class Gauge: Sendable {
    private let value = ManagedAtomic<Int>(0)

    public init() {}

    @inline(__always) public func increment() { value.wrappingIncrement(ordering: .relaxed) }
    @inline(__always) public func decrement() { value.wrappingDecrement(ordering: .relaxed) }
    public var current: Int { value.load(ordering: .relaxed) }

    public func set(_ newValue: Int) { value.store(newValue, ordering: .relaxed) }

    /// Takes one more only while under `limit` (a limit shared by every event loop, never overshot).
    public func increment(below limit: Int) -> Bool {
        var seen = value.load(ordering: .relaxed)
        while seen < limit {
            let (exchanged, original) = value.weakCompareExchange(expected: seen, desired: seen + 1, ordering: .relaxed)
            if exchanged { return true }
            seen = original
        }
        return false
    }
}

/// Request durations, in two shapes: Prometheus' fixed `le` buckets, and fine log-linear buckets
/// (8 per power of two of microseconds, ≤ 12.5 % error) from which p50/p90/p99/p99.9 are read.
public final class LatencyHistogram: Sendable {
    /// Upper bounds in seconds of the Prometheus buckets (`+Inf` is implied).
    /// Up to 120 s, so that half of a long route timeout (the latency alert's threshold) is still below the top bucket.
    public static let prometheusBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
    private static let prometheusBoundsMicros: [UInt64] = prometheusBounds.map { UInt64($0 * 1_000_000) }
    private static let subBucketBits = 3
    private static let fineBucketCount = 64 << subBucketBits

    private let coarse: [ManagedAtomic<Int>]
    private let fine: [ManagedAtomic<Int>]
    private let sumMicros = ManagedAtomic<Int>(0)
    private let count = ManagedAtomic<Int>(0)

    public init() {
        coarse = (0...Self.prometheusBounds.count).map { _ in ManagedAtomic(0) }
        fine = (0..<Self.fineBucketCount).map { _ in ManagedAtomic(0) }
    }

    public func record(microseconds: UInt64) {
        var coarseIndex = Self.prometheusBoundsMicros.count
        for (index, bound) in Self.prometheusBoundsMicros.enumerated() where microseconds <= bound {
            coarseIndex = index
            break
        }
        coarse[coarseIndex].wrappingIncrement(ordering: .relaxed)
        fine[Self.fineIndex(microseconds)].wrappingIncrement(ordering: .relaxed)
        sumMicros.wrappingIncrement(by: Int(clamping: microseconds), ordering: .relaxed)
        count.wrappingIncrement(ordering: .relaxed)
    }

    static func fineIndex(_ value: UInt64) -> Int {
        if value < (1 << subBucketBits) { return Int(value) }
        let magnitude = 63 - value.leadingZeroBitCount
        let subBucket = Int((value >> UInt64(magnitude - subBucketBits)) & ((1 << subBucketBits) - 1))
        return ((magnitude - subBucketBits + 1) << subBucketBits) + subBucket
    }

    /// The largest value that lands in fine bucket `index`.
    static func fineUpperBound(_ index: Int) -> UInt64 {
        if index < (1 << subBucketBits) { return UInt64(index) }
        let magnitude = (index >> subBucketBits) + subBucketBits - 1
        let subBucket = UInt64(index & ((1 << subBucketBits) - 1))
        let base = UInt64(1) << UInt64(magnitude)
        let width = UInt64(1) << UInt64(magnitude - subBucketBits)
        return base + (subBucket + 1) * width - 1
    }

    public struct Snapshot: Sendable {
        public var count: Int
        public var sumSeconds: Double
        /// Cumulative counts at each `prometheusBounds` entry, then `+Inf`.
        public var cumulativeBuckets: [Int]
        fileprivate var fine: [Int]

        /// The value (in seconds) below which `quantile` of the samples fall; 0 with no samples.
        public func quantile(_ quantile: Double) -> Double {
            guard count > 0 else { return 0 }
            let rank = Int((quantile * Double(count)).rounded(.up))
            var seen = 0
            for (index, bucketCount) in fine.enumerated() {
                seen += bucketCount
                if seen >= max(rank, 1) { return Double(LatencyHistogram.fineUpperBound(index)) / 1_000_000 }
            }
            return Double(LatencyHistogram.fineUpperBound(fine.count - 1)) / 1_000_000
        }
    }

    public func snapshot() -> Snapshot {
        var running = 0
        let cumulative = coarse.map { bucket -> Int in
            running += bucket.load(ordering: .relaxed)
            return running
        }
        return Snapshot(
            count: count.load(ordering: .relaxed),
            sumSeconds: Double(sumMicros.load(ordering: .relaxed)) / 1_000_000,
            cumulativeBuckets: cumulative,
            fine: fine.map { $0.load(ordering: .relaxed) }
        )
    }
}

/// Counters for one listener. Kept by name across config reloads.
public final class ListenerStats: Sendable {
    public let name: String
    public let connectionsTotal = Counter()
    public let connectionsActive = Gauge()
    public let requestsTotal = Counter()
    public let requestsActive = Gauge()
    /// From the request head's arrival to the end of the response, for every request (proxied or local).
    public let requestDuration = LatencyHistogram()
    /// `x-outrigger-*` override headers with values that could not be used (ignored).
    public let malformedOverrideHeaders = Counter()
    /// Connections the proxy closed on its own, by why.
    public let connectionsClosed: [Counter] = DownstreamConnectionCloseReason.allCases.map { _ in Counter() }
    /// The overload manager's step for this listener (an `OverloadLevel`), read by every request.
    public let overloadLevelValue = Gauge()

    @inline(__always) public var overloadLevel: OverloadLevel { OverloadLevel(rawValue: overloadLevelValue.current) ?? .normal }

    public func recordClose(_ reason: DownstreamConnectionCloseReason) {
        connectionsClosed[DownstreamConnectionCloseReason.allCases.firstIndex(of: reason)!].increment()
    }

    init(name: String) {
        self.name = name
    }
}

/// Counters for one cluster. Kept by name across config reloads.
public final class ClusterStats: Sendable {
    public let name: String
    /// Upstream responses by status class: index 0 is 1xx … index 4 is 5xx.
    public let responsesByClass: [Counter] = (0..<5).map { _ in Counter() }
    public let requestsActive = Gauge()
    public let connectionsTotal = Counter()
    public let connectionsActive = Gauge()
    public let connectFailures = Counter()
    /// Requests that failed after being sent: reset, timeout or protocol error.
    public let requestFailures = Counter()
    /// The balancer's last plan had a priority level in panic mode (too few healthy endpoints: all used).
    public let panicMode = ManagedAtomic<Bool>(false)
    public let healthChecksPassed = Counter()
    public let healthChecksFailed = Counter()
    /// Endpoints that became unhealthy / healthy by active health checks.
    public let endpointsMarkedUnhealthy = Counter()
    public let endpointsMarkedHealthy = Counter()
    /// Drains started by an endpoint's `x-outrigger-drain: true` or an admin call.
    public let endpointDrains = Counter()
    /// Attempts after the first (in all, and by the condition that asked for them), and retries the budget refused.
    public let retries = Counter()
    public let retriesByReason: [String: Counter] = Dictionary(
        uniqueKeysWithValues: (RetryPolicy.Condition.allCases.map(\.rawValue) + [ClusterStats.staleConnection, ClusterStats.hedge]).map { ($0, Counter()) })
    public static let staleConnection = "stale-connection"
    /// A try started to race one past its per-try timeout (`hedgeOnPerTryTimeout`).
    public static let hedge = "hedge"
    public let retryBudgetExhausted = Counter()
    /// Endpoints ejected by outlier detection, and ejections the max percentage prevented.
    public let outlierEjections = Counter()
    /// Breaker transitions: opened (from closed or half-open) and closed again.
    public let breakersOpened = Counter()
    public let breakersClosed = Counter()
    /// Retries in flight, and requests turned away by each limit.
    public let activeRetries = Gauge()
    public let overflowMaxRequests = Counter()
    public let overflowMaxActiveRetries = Counter()
    public let overflowMaxConnections = Counter()
    public let overflowMaxPendingRequests = Counter()
    /// Connections open or opening, against `limits.maxConnections`.
    public let connectionSlots = Gauge()
    /// Requests waiting for a connection, against `limits.maxPendingRequests`.
    public let pendingRequests = Gauge()
    public let outlierEjectionsPrevented = Counter()
    /// Routed requests that got a response (relayed or local), head received to response end.
    public let requestDuration = LatencyHistogram()
    /// From the request's start to the upstream's response head, for requests whose answer came from an upstream.
    public let upstreamResponseTime = LatencyHistogram()
    /// Each try, from its start (the request's end for a first try still uploading: its start) to its end: answered,
    /// failed, or given up for another.
    public let tryDuration = LatencyHistogram()

    init(name: String) {
        self.name = name
    }

    @inline(__always)
    public func recordResponse(status: Int) {
        let index = min(max(status / 100, 1), 5) - 1
        responsesByClass[index].increment()
    }
}

/// The latency of one route's requests. Kept by listener and route name across config reloads.
public final class RouteStats: Sendable {
    public let listener: String
    public let name: String
    /// Requests the route took that got a response (relayed or local), head received to response end.
    public let requestDuration = LatencyHistogram()
    /// From the request's start to the upstream's response head.
    public let upstreamResponseTime = LatencyHistogram()

    public init(listener: String, name: String) {
        self.listener = listener
        self.name = name
    }
}

/// Every stat the sidecar exports. Injected, never global; objects are created at config compile time so
/// the request path only bumps atomics.
public final class ProxyStats: Sendable {
    private let listeners = NIOLockedValueBox<[String: ListenerStats]>([:])
    private let clusters = NIOLockedValueBox<[String: ClusterStats]>([:])
    private let routes = NIOLockedValueBox<[RouteKey: RouteStats]>([:])
    private let localReplies: [Counter] = LocalReplyReason.allCases.map { _ in Counter() }
    public let configReloadSuccesses = Counter()
    public let configReloadFailures = Counter()
    /// Downstream connections open now on every listener: what the process-wide `maxConnections` limits.
    public let downstreamConnectionsActive = Gauge()
    /// The overload manager's last look: each resource's pressure (reading / limit), and how many looks.
    public let overloadPressures = NIOLockedValueBox<[(resource: String, pressure: Double)]>([])
    public let overloadChecks = Counter()

    public init() {}

    /// Requests in flight on every listener together.
    public var requestsActive: Int { allListeners.reduce(0) { $0 + $1.requestsActive.current } }

    public func listener(_ name: String) -> ListenerStats {
        listeners.withLockedValue { all in
            if let existing = all[name] { return existing }
            let created = ListenerStats(name: name)
            all[name] = created
            return created
        }
    }

    public func cluster(_ name: String) -> ClusterStats {
        clusters.withLockedValue { all in
            if let existing = all[name] { return existing }
            let created = ClusterStats(name: name)
            all[name] = created
            return created
        }
    }

    private struct RouteKey: Hashable {
        var listener: String
        var route: String
    }

    public func route(listener: String, name: String) -> RouteStats {
        routes.withLockedValue { all in
            let key = RouteKey(listener: listener, route: name)
            if let existing = all[key] { return existing }
            let created = RouteStats(listener: listener, name: name)
            all[key] = created
            return created
        }
    }

    public var allRoutes: [RouteStats] {
        routes.withLockedValue { $0.values.sorted { ($0.listener, $0.name) < ($1.listener, $1.name) } }
    }

    @inline(__always)
    public func recordLocalReply(_ reason: LocalReplyReason) {
        localReplies[Self.index(of: reason)].increment()
    }

    public func localReplyCount(_ reason: LocalReplyReason) -> Int {
        localReplies[Self.index(of: reason)].current
    }

    private static let reasonIndexes: [LocalReplyReason: Int] = Dictionary(
        uniqueKeysWithValues: LocalReplyReason.allCases.enumerated().map { ($1, $0) }
    )

    private static func index(of reason: LocalReplyReason) -> Int { reasonIndexes[reason]! }

    public var allListeners: [ListenerStats] {
        listeners.withLockedValue { $0.values.sorted { $0.name < $1.name } }
    }

    public var allClusters: [ClusterStats] {
        clusters.withLockedValue { $0.values.sorted { $0.name < $1.name } }
    }
}
