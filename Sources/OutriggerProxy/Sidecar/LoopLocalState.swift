import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// Everything one event loop owns for forwarding: its upstream pools, endpoint selection and random source.
/// Touched only on its event loop, so nothing here takes a lock.
final class LoopLocalState {
    let eventLoop: any EventLoop
    var random: FastRandom
    /// The exchanges' timers, behind one NIO timer.
    let timers: LoopTimers
    private var selections: ClusterSelections
    private var http1Pools: [String: HTTP1EndpointPool] = [:]
    private var http2Pools: [String: HTTP2EndpointPool] = [:]
    /// The same pools by `Endpoint.id`, the lookup every request makes.
    private var http1PoolsByEndpoint: [Int: HTTP1EndpointPool] = [:]
    /// The pool found last, looked at before `http1PoolsByEndpoint` (a sidecar's requests mostly go to few
    /// endpoints); forgotten with its pool.
    private var lastHTTP1Pool: (endpointID: Int, pool: HTTP1EndpointPool)?
    /// Pools of endpoints that left, kept until their connections have closed.
    private var retiringHTTP1Pools: [ObjectIdentifier: HTTP1EndpointPool] = [:]
    /// This loop's place in the group: its shard of every latency histogram.
    let loopIndex: Int
    /// The process's access log destinations, and this loop's batch for each (by path).
    private let accessLogSinks: AccessLogSinks
    private var accessLogs: [String: AccessLogBuffer] = [:]
    /// Spans of sampled requests, on their way to the process's exporter.
    let spans: SpanBuffer

    /// The process's client TLS contexts, for clusters with `tls`.
    let tlsContexts: UpstreamTLSContexts

    init(eventLoop: any EventLoop, loopIndex: Int, loopCount: Int, accessLogs: AccessLogSinks, spans: SpanExporter, tlsContexts: UpstreamTLSContexts) {
        self.spans = SpanBuffer(exporter: spans, eventLoop: eventLoop)
        self.tlsContexts = tlsContexts
        self.eventLoop = eventLoop
        self.timers = LoopTimers(eventLoop: eventLoop)
        self.loopIndex = loopIndex
        self.accessLogSinks = accessLogs
        self.random = FastRandom()
        self.selections = ClusterSelections(loops: loopCount, loopIndex: loopIndex)
    }

    /// This loop's batch of lines for `config`'s destination (opened by the sidecar when the config loaded,
    /// so this only looks it up); nil if it cannot be had.
    func accessLog(_ config: AccessLogConfig) -> AccessLogBuffer? {
        if let buffer = accessLogs[config.path] { return buffer }
        guard let sink = try? accessLogSinks.sink(for: config.path) else { return nil }
        let buffer = AccessLogBuffer(sink: sink, eventLoop: eventLoop)
        accessLogs[config.path] = buffer
        return buffer
    }

    /// Hands every batched access log line to its destination (shutdown).
    func flushAccessLogs() {
        for buffer in accessLogs.values { buffer.flush() }
    }

    /// A new request's endpoint; the request also counts toward the cluster's retry budget.
    func pickEndpoint(in cluster: ClusterRuntime, now: NIODeadline, hashKey: UInt64?) -> Endpoint? {
        let selection = selections.selection(for: cluster)
        selection.retryBudget.recordRequest(now: now.uptimeNanoseconds)
        return selection.pick(in: cluster, now: now.uptimeNanoseconds, random: &random, hashKey: hashKey)
    }

    /// A retry's endpoint: another than those already tried when the cluster has another eligible one.
    func pickRetryEndpoint(in cluster: ClusterRuntime, now: NIODeadline, avoiding tried: [Int]) -> Endpoint? {
        selections.selection(for: cluster).pick(in: cluster, now: now.uptimeNanoseconds, random: &random, avoiding: tried)
    }

    /// The endpoint whose breaker admits the request: `first` or another (see `ClusterSelection.admitThroughBreaker`).
    func admitThroughBreaker(_ first: Endpoint, in cluster: ClusterRuntime, now: NIODeadline, tried: [Int]) -> Endpoint? {
        selections.selection(for: cluster).admitThroughBreaker(first, in: cluster, now: now.uptimeNanoseconds, random: &random, tried: tried)
    }

    /// Takes a retry from the cluster's budget (this loop's share), if one is left.
    func withdrawRetry(from cluster: ClusterRuntime, now: NIODeadline) -> Bool {
        selections.selection(for: cluster).retryBudget.withdraw(now: now.uptimeNanoseconds)
    }

    /// A request was sent to `endpoint` (least_request and peak_ewma count it; `/clusters` shows it).
    func requestStarted(in cluster: ClusterRuntime, to endpoint: Endpoint, now: NIODeadline) {
        endpoint.state.activeRequests.increment()
        endpoint.state.attempts.increment()
        selections.existing(for: cluster)?.loads.requestStarted(endpoint, now: now.uptimeNanoseconds)
    }

    /// The response head of a request to `endpoint` arrived (peak_ewma's latency sample).
    func responseStarted(in cluster: ClusterRuntime, from endpoint: Endpoint, sentAt: NIODeadline, now: NIODeadline) {
        let rtt = now.uptimeNanoseconds &- sentAt.uptimeNanoseconds
        if let estimate = selections.existing(for: cluster)?.loads.responseStarted(endpoint, rtt: rtt, now: now.uptimeNanoseconds) {
            endpoint.state.publishLatencyEstimate(UInt64(estimate))
        }
    }

    /// A request to `endpoint` ended, whatever its outcome.
    func requestEnded(in cluster: ClusterRuntime, to endpoint: Endpoint) {
        endpoint.state.activeRequests.decrement()
        selections.existing(for: cluster)?.loads.requestEnded(endpoint)
    }

    /// Finds an upstream for `requester`: now (synchronously) or later, through its callbacks.
    func acquire(cluster: ClusterRuntime, endpoint: Endpoint, for requester: any UpstreamLeaseRequester) -> LeaseTicket? {
        switch cluster.config.upstreamProtocol {
        case .http1:
            if let last = lastHTTP1Pool, last.endpointID == endpoint.id {
                return last.pool.lease(for: requester)
            }
            if let pool = http1PoolsByEndpoint[endpoint.id] {
                lastHTTP1Pool = (endpoint.id, pool)
                return pool.lease(for: requester)
            }
            let pool: HTTP1EndpointPool
            if let existing = http1Pools[endpoint.poolKey] {
                pool = existing
            } else {
                let target = UpstreamTarget(eventLoop: eventLoop, endpoint: endpoint, cluster: cluster.config, stats: cluster.stats, tlsContexts: tlsContexts)
                pool = HTTP1EndpointPool(target: target, cluster: cluster.config) { [weak self] pool in
                    self?.forget(pool)
                }
                http1Pools[endpoint.poolKey] = pool
            }
            http1PoolsByEndpoint[endpoint.id] = pool
            lastHTTP1Pool = (endpoint.id, pool)
            return pool.lease(for: requester)
        case .http2:
            let pool: HTTP2EndpointPool
            if let existing = http2Pools[endpoint.poolKey] {
                pool = existing
            } else {
                let target = UpstreamTarget(eventLoop: eventLoop, endpoint: endpoint, cluster: cluster.config, stats: cluster.stats, tlsContexts: tlsContexts)
                pool = HTTP2EndpointPool(target: target) { [weak self] pool in
                    if self?.http2Pools[pool.key] === pool { self?.http2Pools[pool.key] = nil }
                }
                http2Pools[endpoint.poolKey] = pool
            }
            return pool.lease(for: requester)
        }
    }

    private func forget(_ pool: HTTP1EndpointPool) {
        if http1Pools[pool.key] === pool { http1Pools[pool.key] = nil }
        http1PoolsByEndpoint = http1PoolsByEndpoint.filter { $0.value !== pool }
        if lastHTTP1Pool?.pool === pool { lastHTTP1Pool = nil }
        retiringHTTP1Pools[ObjectIdentifier(pool)] = nil
    }

    /// Endpoints left their clusters (DNS, endpoints file, reload): their idle connections close now and busy
    /// ones when their exchange ends; requests in flight finish. `keeping` holds the pool keys still in use.
    func retirePools(keeping: Set<String>) {
        for (key, pool) in http1Pools where !keeping.contains(key) {
            forget(pool)
            // Held until its last connection closed (it says so through `becameEmpty`): its busy connections
            // still have to be closed, and their cluster-wide slots given back.
            retiringHTTP1Pools[ObjectIdentifier(pool)] = pool
            pool.retire()
        }
        for (key, pool) in http2Pools where !keeping.contains(key) {
            http2Pools[key] = nil
            pool.retire()
        }
    }

    /// Closes every idle upstream connection (shutdown).
    func closeIdleConnections() {
        for pool in http1Pools.values { pool.closeIdle() }
        for pool in http2Pools.values { pool.closeIfIdle() }
    }
}
