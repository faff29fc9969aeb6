import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// One endpoint's HTTP/1.1 keep-alive connections on one event loop: the I/O shell around
/// `HTTP1PoolStateMachine`.
final class HTTP1EndpointPool: UpstreamExchangeOwner {
    private let target: UpstreamTarget
    private var state: HTTP1PoolStateMachine
    /// By id, without hashing: one is looked up for every lease.
    private var connections = IDMap<Int, UpstreamExchangeHandler>(idsRiseBy: 1)
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

    private func connect(for requester: any UpstreamLeaseRequester) -> LeaseTicket {
        nextID += 1
        let handler = UpstreamExchangeHandler(id: nextID)
        var requester: (any UpstreamLeaseRequester)? = requester
        let ticket = LeaseTicket { requester = nil }
        let loopBoundHandler = NIOLoopBound(handler, eventLoop: eventLoop)
        target.connect { channel in
            // The handler is the HTTP/1.1 codec: it writes requests as bytes and parses the responses. No header
            // validation on the way out: what is sent was validated where it came from — HTTP1RequestParser and
            // HTTP2FieldCheck downstream, the config decoder for configured headers — or is made here (addresses,
            // ids, counts).
            try channel.pipeline.syncOperations.addHandler(loopBoundHandler.value)
        }.assumeIsolated().whenComplete { result in
            switch result {
            case .success:
                self.target.connections.opened()
                self.connections[handler.id] = handler
                self.state.connectSucceeded(handler.id)
                handler.owner = self
                if let waiting = requester {
                    requester = nil
                    waiting.upstreamLeased(handler)
                } else {
                    // The request went away while we connected: keep the connection for the next one.
                    self.released(handler, reusable: true)
                }
            case .failure:
                self.target.connections.connectFailed()
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

    func exchangeFinished(_ handler: UpstreamExchangeHandler, reusable: Bool, completedOnTheWire: Bool) {
        released(handler, reusable: reusable)
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

    func exchangeClosed(_ handler: UpstreamExchangeHandler) {
        target.connections.closed()
        connections[handler.id] = nil
        perform(state.idleConnectionClosed(handler.id, reserveConnection: reserveConnection))
        if isEmpty { becameEmpty(self) }
    }

    /// The connection now carries a tunnel: it leaves the pool, but is counted (and holds its cluster-wide
    /// slot) until it closes.
    func exchangeDetached(_ handler: UpstreamExchangeHandler) {
        connections[handler.id] = nil
        perform(state.idleConnectionClosed(handler.id, reserveConnection: reserveConnection))
        let clusterConnections = target.connections
        handler.channel?.closeFuture.whenComplete { _ in clusterConnections.closed() }
        if isEmpty { becameEmpty(self) }
    }

    /// Takes a cluster-wide connection slot if one is free.
    private func reserveConnection() -> Bool {
        target.connections.reserve()
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
                target.connections.unused()
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
        for handler in connections.allValues where handler.isIdle {
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
