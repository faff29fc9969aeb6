/// The bookkeeping of one endpoint's HTTP/1.1 connections on one event loop, with no sockets: the
/// pool shell feeds it events and performs the actions it returns.
///
/// A request that finds no idle connection opens one of its own while under `maxConnections` and while its
/// cluster grants one more connection (`reserveConnection`: the cluster-wide `limits.maxConnections`, shared
/// by every pool); otherwise it waits (up to `maxPending` waiters) for one of this pool's connections to be
/// released — or overflows at once when the pool has none that could be.
public struct HTTP1PoolStateMachine: Sendable {
    public typealias ConnectionID = Int
    public typealias WaiterID = Int

    public let maxConnections: Int
    public let maxPending: Int
    /// Most recently released last: reusing the warmest connection lets the others time out.
    private(set) var idle: [ConnectionID] = []
    /// By id, without hashing (`IDMap`): a `Set` hashed the id twice a request, ~450 instructions by callgrind.
    private var leased = IDMap<ConnectionID, Void>(idsRiseBy: 1)
    private(set) var connecting = 0
    private(set) var waiters: [WaiterID] = []

    public init(maxConnections: Int, maxPending: Int) {
        precondition(maxConnections > 0)
        self.maxConnections = maxConnections
        self.maxPending = maxPending
    }

    public var openConnections: Int { idle.count + leased.count }
    public var isEmpty: Bool { openConnections == 0 && connecting == 0 && waiters.isEmpty }

    public enum LeaseAction: Equatable, Sendable {
        /// Use this idle connection now.
        case use(ConnectionID)
        /// Open a new connection for this request; report it with `connectSucceeded` or `connectFailed`.
        case connect
        /// Wait for a released connection (or a connect started for the waiter).
        case wait
        /// Answer 503 `overflow`: no connection may be opened and none of this pool's can be waited for.
        case overflow(OverflowLimit)
    }

    /// Which limit turned a request away.
    public enum OverflowLimit: Equatable, Sendable {
        /// The cluster's connections are all taken and this pool has none to wait for.
        case connections
        /// The queue of waiting requests is full.
        case pendingRequests
    }

    /// `reserveConnection` is asked only when the pool itself may open one; true takes a cluster-wide slot,
    /// which the caller gives back when that connection fails to open or closes.
    public mutating func leaseRequested(_ waiter: WaiterID, reserveConnection: () -> Bool = { true }) -> LeaseAction {
        if let connection = idle.popLast() {
            leased[connection] = ()
            return .use(connection)
        }
        if openConnections + connecting < maxConnections {
            if reserveConnection() {
                connecting += 1
                return .connect
            }
            // The cluster is at its limit: wait only for a connection of this pool.
            if openConnections + connecting == 0 { return .overflow(.connections) }
        }
        if waiters.count < maxPending {
            waiters.append(waiter)
            return .wait
        }
        return .overflow(.pendingRequests)
    }

    /// The connection opened for the request that asked for it; it is leased to that request.
    public mutating func connectSucceeded(_ connection: ConnectionID) {
        connecting -= 1
        leased[connection] = ()
    }

    /// What to do with the waiting requests after a connect failed or a connection was closed.
    public enum FollowUp: Equatable, Sendable {
        case none
        /// Open a connection for this waiter (it no longer waits in the queue).
        case connect(for: WaiterID)
        /// The pool has no connection left and may open none: these waiters overflow (they leave the queue).
        case overflow([WaiterID])
    }

    public mutating func connectFailed(reserveConnection: () -> Bool = { true }) -> FollowUp {
        connecting -= 1
        return connectForFirstWaiter(reserveConnection)
    }

    public enum ReleaseAction: Equatable, Sendable {
        /// Keep it idle for the next request.
        case keepIdle
        /// Give it straight to this waiter.
        case handOver(to: WaiterID)
        /// Close it; then perform the follow-up.
        case close(then: FollowUp)
    }

    /// A request finished with `connection`. `reusable` is false when the exchange left it unusable
    /// (`Connection: close`, a reset, a half-sent body).
    /// The connection being closed still holds its cluster-wide slot (given back when it has closed, followed
    /// by `idleConnectionClosed`), so a waiter gets a new connection here only while the cluster has room.
    public mutating func released(_ connection: ConnectionID, reusable: Bool, reserveConnection: () -> Bool = { true }) -> ReleaseAction {
        guard leased.removeValue(forKey: connection) != nil else { return .close(then: .none) }
        if reusable {
            if !waiters.isEmpty {
                leased[connection] = ()
                return .handOver(to: waiters.removeFirst())
            }
            idle.append(connection)
            return .keepIdle
        }
        return .close(then: connectForFirstWaiter(reserveConnection, closing: 1))
    }

    /// A connection closed (the upstream closed it, its idle timer fired, or the pool closed it); its
    /// cluster-wide slot is already given back.
    public mutating func idleConnectionClosed(_ connection: ConnectionID, reserveConnection: () -> Bool = { true }) -> FollowUp {
        if let index = idle.firstIndex(of: connection) {
            idle.remove(at: index)
        } else {
            leased.removeValue(forKey: connection)
        }
        return connectForFirstWaiter(reserveConnection)
    }

    /// A waiting request gave up (its client left, or its timeout fired).
    public mutating func waiterCancelled(_ waiter: WaiterID) {
        if let index = waiters.firstIndex(of: waiter) { waiters.remove(at: index) }
    }

    /// Stop keeping idle connections (endpoint removed, or shutdown): returns those to close.
    public mutating func drainIdle() -> [ConnectionID] {
        defer { idle.removeAll() }
        return idle
    }

    /// `closing`: a connection no longer counted here that is still closing (its close will look again).
    private mutating func connectForFirstWaiter(_ reserveConnection: () -> Bool, closing: Int = 0) -> FollowUp {
        guard !waiters.isEmpty, openConnections + connecting < maxConnections else { return .none }
        guard reserveConnection() else {
            if openConnections + connecting + closing > 0 { return .none }
            defer { waiters.removeAll() }
            return .overflow(waiters)
        }
        connecting += 1
        return .connect(for: waiters.removeFirst())
    }
}
