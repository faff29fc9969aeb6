import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// The downstream request waiting for an upstream connection or stream.
protocol UpstreamLeaseRequester: AnyObject {
    func upstreamLeased(_ upstream: UpstreamExchangeHandler)
    func upstreamLeaseFailed(_ reason: LocalReplyReason)
}

/// Lets a waiting request give up its place (client gone, timeout).
struct LeaseTicket {
    fileprivate let cancelAction: () -> Void

    func cancel() { cancelAction() }
}

/// One cluster's endpoint selection on one event loop: the current plan (which endpoints may be picked,
/// grouped by priority and zone, with their weights), a balancer per group, and the loads they share.
/// A class so a pick mutates it in place (a struct in a dictionary is copied out and back by some accessors).
final class ClusterSelection {
    private var balancers: [LoadBalancer] = []
    private var groups: [SelectionPlan.Group] = []
    var loads: EndpointLoads
    /// This loop's share of the cluster's retry budget.
    var retryBudget: RetryBudget
    /// What the plan was made from: rebuilt when the endpoint set, the states' epoch or the clock says so.
    private var source: EndpointSet?
    private var epoch = -1
    private var reviewAt: UInt64 = 0
    private let config: LoadBalancerConfig
    private let stagger: Int

    init(_ config: LoadBalancerConfig, budget: RetryBudgetConfig, loops: Int, stagger: Int) {
        self.config = config
        self.stagger = stagger
        self.loads = EndpointLoads(config)
        self.retryBudget = RetryBudget(budget, loops: loops)
    }

    func pick(in cluster: ClusterRuntime, now: UInt64, random: inout FastRandom, hashKey: UInt64?) -> Endpoint? {
        let set = cluster.currentEndpointSet
        let currentEpoch = cluster.endpointStates.selectionEpoch.load(ordering: .acquiring)
        if set !== source || currentEpoch != epoch || now >= reviewAt {
            replan(cluster, set: set, epoch: currentEpoch, now: now)
        }
        switch groups.count {
        case 0:
            return nil
        case 1:
            return balancers[0].pick(from: groups[0].candidates, loads: loads, now: now, random: &random, hashKey: hashKey)
        default:
            let draw = Double(random.next() >> 11) / Double(1 << 53)
            let index = groups.firstIndex { draw < $0.upTo } ?? groups.count - 1
            return balancers[index].pick(from: groups[index].candidates, loads: loads, now: now, random: &random, hashKey: hashKey)
        }
    }

    private func replan(_ cluster: ClusterRuntime, set: EndpointSet, epoch: Int, now: UInt64) {
        let plan = SelectionPlan(endpoints: set.endpoints, config: config, localZone: cluster.localZone, now: now)
        groups = plan.groups
        while balancers.count < groups.count { balancers.append(LoadBalancer(config, stagger: stagger)) }
        if balancers.count > groups.count { balancers.removeLast(balancers.count - groups.count) }
        if set !== source { loads.prune(keeping: set.endpoints) }
        source = set
        self.epoch = epoch
        reviewAt = plan.reviewAt
        cluster.stats.panicMode.store(plan.panic, ordering: .relaxed)
    }
}

/// Everything one event loop owns for forwarding: its upstream pools, endpoint selection and random source.
/// Touched only on its event loop, so nothing here takes a lock.
final class LoopLocalState {
    let eventLoop: any EventLoop
    var random: FastRandom
    private var selections: [ObjectIdentifier: ClusterSelection] = [:]
    private var http1Pools: [String: HTTP1EndpointPool] = [:]
    private var http2Pools: [String: HTTP2EndpointPool] = [:]
    /// The same pools by `Endpoint.id`, the lookup every request makes.
    private var http1PoolsByEndpoint: [Int: HTTP1EndpointPool] = [:]
    /// Pools of endpoints that left, kept until their connections have closed.
    private var retiringHTTP1Pools: [ObjectIdentifier: HTTP1EndpointPool] = [:]
    private let loopIndex: Int
    private let loopCount: Int
    /// The process's access log destinations, and this loop's batch for each (by path).
    private let accessLogSinks: AccessLogSinks
    private var accessLogs: [String: AccessLogBuffer] = [:]

    /// The process's client TLS contexts, for clusters with `tls`.
    let tlsContexts: UpstreamTLSContexts

    init(eventLoop: any EventLoop, loopIndex: Int, loopCount: Int, accessLogs: AccessLogSinks, tlsContexts: UpstreamTLSContexts) {
        self.tlsContexts = tlsContexts
        self.eventLoop = eventLoop
        self.loopIndex = loopIndex
        self.loopCount = loopCount
        self.accessLogSinks = accessLogs
        self.random = FastRandom()
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

    private func selection(for cluster: ClusterRuntime) -> ClusterSelection {
        let key = ObjectIdentifier(cluster)
        if let existing = selections[key] { return existing }
        // A new snapshot brings new cluster objects; forget selections of clusters no longer in use.
        if selections.count > 1024 { selections.removeAll() }
        let created = ClusterSelection(cluster.config.loadBalancer, budget: cluster.config.retryBudget, loops: loopCount, stagger: loopIndex)
        selections[key] = created
        return created
    }

    /// A new request's endpoint; the request also counts toward the cluster's retry budget.
    func pickEndpoint(in cluster: ClusterRuntime, now: NIODeadline, hashKey: UInt64?) -> Endpoint? {
        let selection = selection(for: cluster)
        selection.retryBudget.recordRequest(now: now.uptimeNanoseconds)
        return selection.pick(in: cluster, now: now.uptimeNanoseconds, random: &random, hashKey: hashKey)
    }

    /// A retry's endpoint: another than those already tried when the cluster has another eligible one.
    func pickRetryEndpoint(in cluster: ClusterRuntime, now: NIODeadline, avoiding tried: [Int]) -> Endpoint? {
        let selection = selection(for: cluster)
        var pick = selection.pick(in: cluster, now: now.uptimeNanoseconds, random: &random, hashKey: nil)
        for _ in 0..<4 where pick.map({ tried.contains($0.id) }) == true {
            pick = selection.pick(in: cluster, now: now.uptimeNanoseconds, random: &random, hashKey: nil)
        }
        return pick
    }

    /// Takes a retry from the cluster's budget (this loop's share), if one is left.
    func withdrawRetry(from cluster: ClusterRuntime, now: NIODeadline) -> Bool {
        selection(for: cluster).retryBudget.withdraw(now: now.uptimeNanoseconds)
    }

    /// A request was sent to `endpoint` (least_request and peak_ewma count it; `/clusters` shows it).
    func requestStarted(in cluster: ClusterRuntime, to endpoint: Endpoint, now: NIODeadline) {
        endpoint.state.activeRequests.increment()
        endpoint.state.attempts.increment()
        selections[ObjectIdentifier(cluster)]?.loads.requestStarted(endpoint, now: now.uptimeNanoseconds)
    }

    /// The response head of a request to `endpoint` arrived (peak_ewma's latency sample).
    func responseStarted(in cluster: ClusterRuntime, from endpoint: Endpoint, sentAt: NIODeadline, now: NIODeadline) {
        let rtt = now.uptimeNanoseconds &- sentAt.uptimeNanoseconds
        if let estimate = selections[ObjectIdentifier(cluster)]?.loads.responseStarted(endpoint, rtt: rtt, now: now.uptimeNanoseconds) {
            endpoint.state.publishLatencyEstimate(UInt64(estimate))
        }
    }

    /// A request to `endpoint` ended, whatever its outcome.
    func requestEnded(in cluster: ClusterRuntime, to endpoint: Endpoint) {
        endpoint.state.activeRequests.decrement()
        selections[ObjectIdentifier(cluster)]?.loads.requestEnded(endpoint)
    }

    /// Finds an upstream for `requester`: now (synchronously) or later, through its callbacks.
    func acquire(cluster: ClusterRuntime, endpoint: Endpoint, for requester: any UpstreamLeaseRequester) -> LeaseTicket? {
        switch cluster.config.upstreamProtocol {
        case .http1:
            if let pool = http1PoolsByEndpoint[endpoint.id] {
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

extension AdaptiveRecvByteBufferAllocator {
    /// NIO's adaptive sizing, up to 32 KiB a read (not 64 KiB): every connection keeps its grown buffers.
    static let bounded = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 32 * 1024)
}

/// Where and how a pool connects: one endpoint, on one event loop, with its cluster's settings.
struct UpstreamTarget {
    let key: String
    let eventLoop: any EventLoop
    let address: SocketAddress
    let connectTimeout: Duration
    let idleTimeout: TimeAmount
    let stats: ClusterStats
    /// The cluster-wide limits every pool of the cluster counts against.
    let limits: ClusterLimits
    /// TLS to the endpoint, when the cluster has `tls`.
    let tls: (config: UpstreamTLSConfig, contexts: UpstreamTLSContexts)?
    let upstreamProtocol: ClusterConfig.UpstreamProtocol
    let endpointHost: String

    init(eventLoop: any EventLoop, endpoint: Endpoint, cluster: ClusterConfig, stats: ClusterStats, tlsContexts: UpstreamTLSContexts) {
        self.key = endpoint.poolKey
        self.eventLoop = eventLoop
        self.address = endpoint.address
        self.connectTimeout = cluster.connectTimeout
        self.idleTimeout = .nanoseconds(cluster.pool.idleTimeout.nanoseconds)
        self.stats = stats
        self.limits = cluster.limits
        self.tls = cluster.tls.map { ($0, tlsContexts) }
        self.upstreamProtocol = cluster.upstreamProtocol
        self.endpointHost = endpoint.configured.host
    }

    /// Opens a TCP connection to the endpoint (and, for a TLS cluster, completes and checks the handshake,
    /// within the same connect timeout) and lets `configure` set up its pipeline.
    func connect(configure: @escaping @Sendable (Channel) throws -> Void) -> EventLoopFuture<Channel> {
        let timeout = TimeAmount.nanoseconds(connectTimeout.nanoseconds)
        var settings: UpstreamTLSSettings?
        if let tls {
            do {
                let context = try tls.contexts.context(for: tls.config, upstreamProtocol: upstreamProtocol)
                settings = UpstreamTLSSettings(context: context, tls: tls.config, endpointHost: endpointHost, upstreamProtocol: upstreamProtocol)
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        }
        let established = settings == nil ? nil : eventLoop.makePromise(of: Void.self)
        let tlsSettings = settings.map { NIOLoopBound($0, eventLoop: eventLoop) }
        let connecting = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            // What a response body may pin while its client reads slowly: the reads of one burst are written
            // downstream before reading stops, and a channel keeps one receive buffer per read of a burst for
            // its life (NIO's defaults, 4 × up to 64 KiB, held 262 KiB per slow client).
            .channelOption(.maxMessagesPerRead, value: 2)
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator.bounded)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsSettings, let established { try tlsSettings.value.addHandlers(to: channel, timeout: timeout, established: established) }
                    try configure(channel)
                }
            }
            .connect(to: address)
        guard let established else { return connecting }
        connecting.whenFailure { established.fail($0) }
        return connecting.flatMap { channel in
            established.futureResult.map { channel }
        }
    }
}

/// One endpoint's HTTP/1.1 keep-alive connections on one event loop: the I/O shell around
/// `HTTP1PoolStateMachine`.
final class HTTP1EndpointPool {
    private let target: UpstreamTarget
    private var state: HTTP1PoolStateMachine
    private var connections: [Int: UpstreamExchangeHandler] = [:]
    /// One timer per pool closes connections idle longer than `idleTimeout` (a timer per release would
    /// cost a scheduled task on every request).
    private var idleSweep: Scheduled<Void>?
    private var waiters: [Int: any UpstreamLeaseRequester] = [:]
    private var nextID = 0
    private let becameEmpty: (HTTP1EndpointPool) -> Void
    /// Its endpoint left: connections close as soon as they are idle.
    private var retired = false

    var key: String { target.key }
    private var eventLoop: any EventLoop { target.eventLoop }
    private var stats: ClusterStats { target.stats }
    private var limits: ClusterLimits { target.limits }
    /// Nothing open, opening or waiting — connections being closed included (`drainIdle` already forgot them
    /// in the state machine, but their close still has to be counted here).
    private var isEmpty: Bool { state.isEmpty && connections.isEmpty }

    init(target: UpstreamTarget, cluster: ClusterConfig, becameEmpty: @escaping (HTTP1EndpointPool) -> Void) {
        self.target = target
        self.state = HTTP1PoolStateMachine(maxConnections: cluster.pool.maxConnectionsPerEndpoint, maxPending: cluster.pool.maxPendingRequests)
        self.becameEmpty = becameEmpty
    }

    func lease(for requester: any UpstreamLeaseRequester) -> LeaseTicket? {
        nextID += 1
        let waiterID = nextID
        switch state.leaseRequested(waiterID, reserveConnection: reserveConnection) {
        case .use(let connectionID):
            requester.upstreamLeased(connections[connectionID]!)
            return nil
        case .connect:
            return connect(for: requester)
        case .wait:
            guard stats.pendingRequests.increment(below: limits.maxPendingRequests) else {
                state.waiterCancelled(waiterID)
                stats.overflowMaxPendingRequests.increment()
                requester.upstreamLeaseFailed(.overflow)
                return nil
            }
            waiters[waiterID] = requester
            return LeaseTicket { [weak self] in
                guard let self, self.takeWaiter(waiterID) != nil else { return }
                self.state.waiterCancelled(waiterID)
            }
        case .overflow(let limit):
            (limit == .connections ? stats.overflowMaxConnections : stats.overflowMaxPendingRequests).increment()
            requester.upstreamLeaseFailed(.overflow)
            return nil
        }
    }

    /// A waiting request leaves the queue (served, gone, or turned away).
    private func takeWaiter(_ waiterID: Int) -> (any UpstreamLeaseRequester)? {
        guard let requester = waiters.removeValue(forKey: waiterID) else { return nil }
        stats.pendingRequests.decrement()
        return requester
    }

    /// Gives back a connection's cluster-wide slot (it failed to open, or closed).
    private func freeConnectionSlot() {
        stats.connectionSlots.decrement()
    }

    private func connect(for requester: any UpstreamLeaseRequester) -> LeaseTicket {
        nextID += 1
        let handler = UpstreamExchangeHandler(id: nextID)
        var requester: (any UpstreamLeaseRequester)? = requester
        let ticket = LeaseTicket { requester = nil }
        let loopBoundHandler = NIOLoopBound(handler, eventLoop: eventLoop)
        target.connect { channel in
            try channel.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes)
            try channel.pipeline.syncOperations.addHandler(loopBoundHandler.value)
        }.assumeIsolated().whenComplete { result in
            switch result {
            case .success:
                self.stats.connectionsTotal.increment()
                self.stats.connectionsActive.increment()
                self.connections[handler.id] = handler
                self.state.connectSucceeded(handler.id)
                handler.exchangeFinished = { [weak self] handler, reusable, _ in self?.released(handler, reusable: reusable) }
                handler.closed = { [weak self] handler in self?.connectionClosed(handler) }
                handler.detached = { [weak self] handler in self?.connectionDetached(handler) }
                if let waiting = requester {
                    requester = nil
                    waiting.upstreamLeased(handler)
                } else {
                    // The request went away while we connected: keep the connection for the next one.
                    self.released(handler, reusable: true)
                }
            case .failure:
                self.stats.connectFailures.increment()
                self.freeConnectionSlot()
                let followUp = self.state.connectFailed(reserveConnection: self.reserveConnection)
                if let waiting = requester {
                    requester = nil
                    waiting.upstreamLeaseFailed(.connectFailure)
                }
                self.perform(followUp)
            }
        }
        return ticket
    }

    private func released(_ handler: UpstreamExchangeHandler, reusable: Bool) {
        switch state.released(handler.id, reusable: reusable && !retired, reserveConnection: reserveConnection) {
        case .keepIdle:
            handler.idleSince = .now()
            if idleSweep == nil { armIdleSweep(at: handler.idleSince + target.idleTimeout) }
        case .handOver(let waiterID):
            takeWaiter(waiterID)?.upstreamLeased(handler)
        case .close(let followUp):
            handler.channel?.close(promise: nil)
            perform(followUp)
        }
    }

    private func connectionClosed(_ handler: UpstreamExchangeHandler) {
        stats.connectionsActive.decrement()
        freeConnectionSlot()
        connections[handler.id] = nil
        perform(state.idleConnectionClosed(handler.id, reserveConnection: reserveConnection))
        if isEmpty { becameEmpty(self) }
    }

    /// The connection now carries a tunnel: it leaves the pool, but is counted (and holds its cluster-wide
    /// slot) until it closes.
    private func connectionDetached(_ handler: UpstreamExchangeHandler) {
        connections[handler.id] = nil
        perform(state.idleConnectionClosed(handler.id, reserveConnection: reserveConnection))
        let stats = self.stats
        handler.channel?.closeFuture.whenComplete { _ in
            stats.connectionsActive.decrement()
            stats.connectionSlots.decrement()
        }
        if isEmpty { becameEmpty(self) }
    }

    /// Takes a cluster-wide connection slot if one is free.
    private func reserveConnection() -> Bool {
        stats.connectionSlots.increment(below: limits.maxConnections)
    }

    private func perform(_ followUp: HTTP1PoolStateMachine.FollowUp) {
        var followUp = followUp
        while true {
            switch followUp {
            case .none:
                return
            case .connect(let waiterID):
                if let requester = takeWaiter(waiterID) {
                    _ = connect(for: requester)
                    return
                }
                // The waiter had left: give the reservation back.
                freeConnectionSlot()
                followUp = state.connectFailed(reserveConnection: reserveConnection)
            case .overflow(let waiterIDs):
                for waiterID in waiterIDs {
                    guard let requester = takeWaiter(waiterID) else { continue }
                    stats.overflowMaxConnections.increment()
                    requester.upstreamLeaseFailed(.overflow)
                }
                return
            }
        }
    }

    private func armIdleSweep(at deadline: NIODeadline) {
        idleSweep = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            self?.sweepIdleConnections()
        }
    }

    /// Closes the connections idle for `idleTimeout`, and looks again when the next one will be.
    private func sweepIdleConnections() {
        idleSweep = nil
        let now = NIODeadline.now()
        var next: NIODeadline?
        for handler in connections.values where handler.isIdle {
            let expiry = handler.idleSince + target.idleTimeout
            if expiry <= now {
                handler.channel?.close(promise: nil)
            } else {
                next = min(next ?? expiry, expiry)
            }
        }
        if let next { armIdleSweep(at: next) }
    }

    func closeIdle() {
        for id in state.drainIdle() {
            connections[id]?.channel?.close(promise: nil)
        }
    }

    func retire() {
        retired = true
        closeIdle()
        if isEmpty { becameEmpty(self) }
    }
}

/// One endpoint's HTTP/2 connections on one event loop. A request takes a stream on the oldest connection with room
/// under the upstream's SETTINGS_MAX_CONCURRENT_STREAMS; when every one is full, another opens (as Envoy's pool
/// does), unless the cluster's `maxConnections` are all taken: then the least busy connection queues the stream
/// until one of its streams ends (NIO holds it). A connection that got a GOAWAY or closed leaves the pool; idle
/// ones close after the pool's idle timeout, so the extra connections of a burst do not stay.
final class HTTP2EndpointPool {
    private let target: UpstreamTarget
    private let becameEmpty: (HTTP2EndpointPool) -> Void
    private var connections: [HTTP2EndpointConnection] = []

    var key: String { target.key }

    init(target: UpstreamTarget, becameEmpty: @escaping (HTTP2EndpointPool) -> Void) {
        self.target = target
        self.becameEmpty = becameEmpty
    }

    func lease(for requester: any UpstreamLeaseRequester) -> LeaseTicket? {
        let placement = HTTP2StreamPlacement.place(among: connections.count) { index in
            (connections[index].committedStreams, connections[index].peerMaxConcurrentStreams)
        } mayOpen: {
            target.stats.connectionSlots.current < target.limits.maxConnections
        }
        switch placement {
        case .existing(let index):
            return connections[index].lease(for: requester)
        case .open:
            let connection = HTTP2EndpointConnection(target: target) { [weak self] connection in self?.left(connection) }
            connections.append(connection)
            return connection.lease(for: requester)
        }
    }

    /// The connection takes no new streams (GOAWAY, closed, failed to open): the pool forgets it.
    private func left(_ connection: HTTP2EndpointConnection) {
        connections.removeAll { $0 === connection }
        if connections.isEmpty { becameEmpty(self) }
    }

    func closeIfIdle() {
        for connection in connections { connection.closeIfIdle() }
    }

    /// Its endpoint left: each connection closes once no stream is open.
    func retire() {
        for connection in connections { connection.retire() }
    }
}

/// One multiplexed HTTP/2 connection to an endpoint, on one event loop; each request is a stream.
final class HTTP2EndpointConnection {
    private let target: UpstreamTarget
    private let becameEmpty: (HTTP2EndpointConnection) -> Void

    private enum State {
        case disconnected
        case connecting([Int: any UpstreamLeaseRequester])
        case ready(Channel, HTTP2UpstreamConnection)
    }

    private var state: State = .disconnected
    private var activeStreams = 0
    /// The upstream's SETTINGS_MAX_CONCURRENT_STREAMS; until its SETTINGS arrive, 100 (RFC 9113's advised minimum;
    /// the protocol's own initial value is unlimited).
    private(set) var peerMaxConcurrentStreams = 100
    /// Its endpoint left: the connection closes once no stream is open.
    private var retired = false
    private var idleTimer: Scheduled<Void>?
    private var nextID = 0
    /// The upstream sent GOAWAY: streams past this id were not processed.
    private var goAwayLastStreamID: HTTP2StreamID?

    var key: String { target.key }
    private var eventLoop: any EventLoop { target.eventLoop }
    private var stats: ClusterStats { target.stats }
    private var limits: ClusterLimits { target.limits }

    init(target: UpstreamTarget, becameEmpty: @escaping (HTTP2EndpointConnection) -> Void) {
        self.target = target
        self.becameEmpty = becameEmpty
    }

    /// Streams open or promised (requests waiting for the connection to open); `Int.max` once it takes no more.
    var committedStreams: Int {
        if retired || goAwayLastStreamID != nil { return .max }
        switch state {
        case .disconnected: return .max
        case .connecting(let waiting): return waiting.count
        case .ready: return activeStreams
        }
    }

    func lease(for requester: any UpstreamLeaseRequester) -> LeaseTicket? {
        nextID += 1
        let waiterID = nextID
        switch state {
        case .ready(let channel, let connection):
            guard channel.isActive else {
                // Closed, and the pool has not heard yet: no stream can open on it.
                requester.upstreamLeaseFailed(.upstreamReset)
                return nil
            }
            return openStream(on: connection, for: requester)
        case .connecting(var waiting):
            waiting[waiterID] = requester
            state = .connecting(waiting)
        case .disconnected:
            state = .connecting([waiterID: requester])
            connect()
        }
        return LeaseTicket { [weak self] in
            guard let self, case .connecting(var waiting) = self.state else { return }
            waiting[waiterID] = nil
            self.state = .connecting(waiting)
        }
    }

    private func connect() {
        guard stats.connectionSlots.increment(below: limits.maxConnections) else {
            // The cluster's connections are all taken: the requests waiting for this one overflow.
            guard case .connecting(let waiting) = state else { return }
            state = .disconnected
            for requester in waiting.values {
                stats.overflowMaxConnections.increment()
                requester.upstreamLeaseFailed(.overflow)
            }
            becameEmpty(self)
            return
        }
        let frames = NIOLoopBound(HTTP2UpstreamConnection(scheme: target.tls == nil ? "http" : "https"), eventLoop: eventLoop)
        frames.value.goAwayReceived = { [weak self] lastStreamID in self?.goAwayReceived(lastStreamID: lastStreamID) }
        frames.value.maxConcurrentStreamsChanged = { [weak self] limit in self?.peerMaxConcurrentStreams = limit }
        target.connect { channel in
            // A connection error (we sent GOAWAY) closes the connection, so the next request opens a new one.
            try channel.pipeline.syncOperations.addHandler(HTTP2ConnectionErrorCloser())
            var configuration = NIOHTTP2Handler.ConnectionConfiguration.proxyConnection
            // No server push: a proxy has no use for it.
            configuration.initialSettings = nioDefaultSettings + [HTTP2Setting(parameter: .enablePush, value: 0)]
            try channel.pipeline.syncOperations.addHandler(NIOHTTP2Handler(mode: .client, connectionConfiguration: configuration, streamConfiguration: .init()))
            try channel.pipeline.syncOperations.addHandler(frames.value)
        }.flatMap { channel in
            // The connect future completes before channelActive has gone down the pipeline, and NIO's HTTP/2
            // handler sends the connection preface then: streams are opened once it has.
            channel.eventLoop.submit { channel }
        }.assumeIsolated().whenComplete { result in
            guard case .connecting(let waiting) = self.state else { return }
            switch result {
            case .success(let channel):
                let connection = frames.value
                self.stats.connectionsTotal.increment()
                self.stats.connectionsActive.increment()
                self.state = .ready(channel, connection)
                channel.closeFuture.assumeIsolated().whenComplete { _ in
                    self.stats.connectionsActive.decrement()
                    self.stats.connectionSlots.decrement()
                    if case .ready(let current, _) = self.state, current === channel {
                        self.state = .disconnected
                        self.idleTimer?.cancel()
                        self.becameEmpty(self)
                    }
                }
                for requester in waiting.values { _ = self.openStream(on: connection, for: requester) }
                self.armIdleTimerIfIdle()
            case .failure:
                self.stats.connectFailures.increment()
                self.stats.connectionSlots.decrement()
                self.state = .disconnected
                for requester in waiting.values { requester.upstreamLeaseFailed(.connectFailure) }
                self.becameEmpty(self)
            }
        }
    }

    /// Leased at once: the stream is opened on the wire when the request's head is sent.
    private func openStream(on connection: HTTP2UpstreamConnection, for requester: any UpstreamLeaseRequester) -> LeaseTicket? {
        nextID += 1
        let handler = UpstreamExchangeHandler(id: nextID)
        handler.attach(connection.makeStream(for: handler))
        activeStreams += 1
        idleTimer?.cancel()
        idleTimer = nil
        // A stream whose request and response both ended is closed by the protocol. Any other ending — an aborted
        // exchange, an early response, a stream leased too late — resets it (a reset of a closed stream would count
        // against us at the server: NIO's, after 200, ends the connection with GOAWAY ENHANCE_YOUR_CALM).
        handler.exchangeFinished = { handler, _, completedOnTheWire in
            if !completedOnTheWire { handler.closeTransport() }
        }
        handler.closed = { [weak self] _ in
            guard let self else { return }
            self.activeStreams -= 1
            self.armIdleTimerIfIdle()
        }
        requester.upstreamLeased(handler)
        return nil
    }

    private func armIdleTimerIfIdle() {
        guard activeStreams == 0, case .ready(let channel, _) = state else { return }
        if retired {
            channel.close(promise: nil)
            return
        }
        idleTimer?.cancel()
        idleTimer = eventLoop.assumeIsolated().scheduleTask(in: target.idleTimeout) {
            channel.close(promise: nil)
        }
    }

    func closeIfIdle() {
        guard activeStreams == 0, case .ready(let channel, _) = state else { return }
        channel.close(promise: nil)
    }

    /// Its endpoint left: close once no stream is open.
    func retire() {
        retired = true
        closeIfIdle()
    }

    /// The upstream is going away: streams past its last id were refused (and are sent again elsewhere), the
    /// others finish here, and new requests open a new connection.
    private func goAwayReceived(lastStreamID: HTTP2StreamID) {
        goAwayLastStreamID = min(goAwayLastStreamID ?? lastStreamID, lastStreamID)
        guard !retired else { return }
        becameEmpty(self)
        retire()
    }
}
