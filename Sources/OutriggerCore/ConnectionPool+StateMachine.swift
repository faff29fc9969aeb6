/// The bookkeeping of one endpoint's HTTP/1.1 connections on one event loop, with no sockets: the
/// pool shell feeds it events and performs the actions it returns.
///
/// A request that finds no idle connection opens one of its own while under `maxConnections`; at the
/// limit it waits (up to `maxPending` waiters) for a connection to be released; past that it overflows.
public struct HTTP1PoolStateMachine: Sendable {
    public typealias ConnectionID = Int
    public typealias WaiterID = Int

    public let maxConnections: Int
    public let maxPending: Int
    /// Most recently released last: reusing the warmest connection lets the others time out.
    private(set) var idle: [ConnectionID] = []
    private(set) var leased: Set<ConnectionID> = []
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
        /// Pool and queue are full: answer 503 `overflow`.
        case overflow
    }

    public mutating func leaseRequested(_ waiter: WaiterID) -> LeaseAction {
        if let connection = idle.popLast() {
            leased.insert(connection)
            return .use(connection)
        }
        if openConnections + connecting < maxConnections {
            connecting += 1
            return .connect
        }
        if waiters.count < maxPending {
            waiters.append(waiter)
            return .wait
        }
        return .overflow
    }

    /// The connection opened for the request that asked for it; it is leased to that request.
    public mutating func connectSucceeded(_ connection: ConnectionID) {
        connecting -= 1
        leased.insert(connection)
    }

    /// What to do with the waiting requests after a connect failed or a connection was closed.
    public enum FollowUp: Equatable, Sendable {
        case none
        /// Open a connection for this waiter (it no longer waits in the queue).
        case connect(for: WaiterID)
    }

    public mutating func connectFailed() -> FollowUp {
        connecting -= 1
        return connectForFirstWaiter()
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
    public mutating func released(_ connection: ConnectionID, reusable: Bool) -> ReleaseAction {
        guard leased.remove(connection) != nil else { return .close(then: .none) }
        if reusable {
            if !waiters.isEmpty {
                leased.insert(connection)
                return .handOver(to: waiters.removeFirst())
            }
            idle.append(connection)
            return .keepIdle
        }
        return .close(then: connectForFirstWaiter())
    }

    /// An idle connection closed (the upstream closed it, or its idle timer fired).
    public mutating func idleConnectionClosed(_ connection: ConnectionID) -> FollowUp {
        if let index = idle.firstIndex(of: connection) {
            idle.remove(at: index)
        } else {
            leased.remove(connection)
        }
        return connectForFirstWaiter()
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

    private mutating func connectForFirstWaiter() -> FollowUp {
        guard !waiters.isEmpty, openConnections + connecting < maxConnections else { return .none }
        connecting += 1
        return .connect(for: waiters.removeFirst())
    }
}
