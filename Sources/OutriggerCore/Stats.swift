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

/// Counters for one listener. Kept by name across config reloads.
public final class ListenerStats: Sendable {
    public let name: String
    public let connectionsTotal = Counter()
    public let connectionsActive = Gauge()
    public let requestsTotal = Counter()
    public let requestsActive = Gauge()
    /// From the request head's arrival to the end of the response, for every request (proxied or local).
    public let requestDuration: LatencyHistogram
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

    init(name: String, loops: Int) {
        self.name = name
        requestDuration = LatencyHistogram(loops: loops)
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
    public let requestDuration: LatencyHistogram
    /// From the request's start to the upstream's response head, for requests whose answer came from an upstream.
    public let upstreamResponseTime: LatencyHistogram
    /// Each try, from its start (the request's end for a first try still uploading: its start) to its end: answered,
    /// failed, or given up for another.
    public let tryDuration: LatencyHistogram

    init(name: String, loops: Int) {
        self.name = name
        requestDuration = LatencyHistogram(loops: loops)
        upstreamResponseTime = LatencyHistogram(loops: loops)
        tryDuration = LatencyHistogram(loops: loops)
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
    public let requestDuration: LatencyHistogram
    /// From the request's start to the upstream's response head.
    public let upstreamResponseTime: LatencyHistogram
    /// Of the requests in `requestDuration`, those answered 5xx (relayed or local): the route's success rate.
    public let serverErrors = Counter()

    public init(listener: String, name: String, loops: Int = 0) {
        self.listener = listener
        self.name = name
        requestDuration = LatencyHistogram(loops: loops)
        upstreamResponseTime = LatencyHistogram(loops: loops)
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
    /// The event loops that record latencies, each into its own shard of every histogram.
    public let loops: Int

    /// `loops`: how many event loops record (`LatencyHistogram.record(microseconds:loop:)`); 0 when none does.
    public init(loops: Int = 0) {
        self.loops = loops
    }

    /// Requests in flight on every listener together.
    public var requestsActive: Int { allListeners.reduce(0) { $0 + $1.requestsActive.current } }

    public func listener(_ name: String) -> ListenerStats {
        listeners.withLockedValue { all in
            if let existing = all[name] { return existing }
            let created = ListenerStats(name: name, loops: loops)
            all[name] = created
            return created
        }
    }

    public func cluster(_ name: String) -> ClusterStats {
        clusters.withLockedValue { all in
            if let existing = all[name] { return existing }
            let created = ClusterStats(name: name, loops: loops)
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
            let created = RouteStats(listener: listener, name: name, loops: loops)
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
