/// The bookkeeping of one multiplexed HTTP/2 connection to an endpoint, on one event loop, with no sockets: the
/// shell (`HTTP2EndpointConnection`) feeds it events and performs the actions it returns, as the HTTP/1.1 pool's
/// shell does with `HTTP1PoolStateMachine`.
///
/// The first request opens the connection (when the cluster grants one more: `reserveConnection`); requests that
/// come while it opens wait for it, and each gets a stream once it is up. An idle connection closes after the idle
/// timeout, at once when its endpoint left (retired) and no stream is open. A GOAWAY from the upstream or the
/// endpoint's leaving takes it out of its pool (no new streams); a connection that failed to open or closed leaves
/// too. It leaves its pool once.
public struct HTTP2UpstreamConnectionStateMachine: Sendable {
    public typealias WaiterID = Int

    private enum State: Sendable {
        case disconnected
        case connecting(waiters: [WaiterID])
        case ready(activeStreams: Int)
    }

    private var state = State.disconnected
    /// Its endpoint left, or the upstream sent GOAWAY: no new streams, and it closes once none is open.
    private var retired = false
    private var leftPool = false
    /// The upstream's SETTINGS_MAX_CONCURRENT_STREAMS; until its SETTINGS arrive, 100 (RFC 9113's advised minimum;
    /// the protocol's own initial value is unlimited).
    public private(set) var peerMaxConcurrentStreams = 100

    public init() {}

    /// Streams open or promised (requests waiting for the connection to open); `Int.max` once it takes no more.
    public var committedStreams: Int {
        if retired { return .max }
        switch state {
        case .disconnected: return .max
        case .connecting(let waiters): return waiters.count
        case .ready(let activeStreams): return activeStreams
        }
    }

    public enum LeaseAction: Equatable, Sendable {
        /// The connection is up: open a stream now (then `streamOpened`).
        case openStream
        /// Wait for the connection being opened.
        case wait
        /// Open the connection (a cluster slot was taken for it); report `connected` or `connectFailed`.
        case connect
        /// Answer 503 `overflow`: the cluster's connections are all taken. The connection leaves its pool.
        case overflow
    }

    /// `reserveConnection` is asked only when the connection must be opened; true takes a cluster-wide slot, which
    /// the shell gives back when the connection fails to open or closes.
    public mutating func leaseRequested(_ waiter: WaiterID, reserveConnection: () -> Bool) -> LeaseAction {
        switch state {
        case .ready:
            return .openStream
        case .connecting(var waiters):
            waiters.append(waiter)
            state = .connecting(waiters: waiters)
            return .wait
        case .disconnected:
            guard reserveConnection() else {
                leftPool = true
                return .overflow
            }
            state = .connecting(waiters: [waiter])
            return .connect
        }
    }

    /// A waiting request gave up (its route timed out, its client left).
    public mutating func waiterCancelled(_ waiter: WaiterID) {
        guard case .connecting(var waiters) = state else { return }
        waiters.removeAll { $0 == waiter }
        state = .connecting(waiters: waiters)
    }

    /// What the idle timer should do.
    public enum IdleAction: Equatable, Sendable {
        case none
        /// No stream is open: close after the idle timeout (re-armed if armed).
        case armIdleTimer
        /// A stream opened: the connection is not idle.
        case cancelIdleTimer
        /// Close the connection now.
        case close
    }

    /// The connection opened: the waiting requests get a stream each (`streamOpened` for each), in the order they came.
    public mutating func connected() -> (open: [WaiterID], idle: IdleAction) {
        guard case .connecting(let waiters) = state else { return ([], .none) }
        state = .ready(activeStreams: 0)
        return (waiters, waiters.isEmpty ? idleAction() : .none)
    }

    /// The connection failed to open: the waiting requests fail (`connectFailure`), and it leaves its pool.
    public mutating func connectFailed() -> (fail: [WaiterID], leavePool: Bool) {
        guard case .connecting(let waiters) = state else { return ([], false) }
        state = .disconnected
        return (waiters, leavePool())
    }

    public mutating func streamOpened() -> IdleAction {
        guard case .ready(let activeStreams) = state else { return .none }
        state = .ready(activeStreams: activeStreams + 1)
        return .cancelIdleTimer
    }

    public mutating func streamClosed() -> IdleAction {
        guard case .ready(let activeStreams) = state, activeStreams > 0 else { return .none }
        state = .ready(activeStreams: activeStreams - 1)
        return idleAction()
    }

    /// The connection closed (the idle timeout, a retirement, the upstream, an error): it leaves its pool.
    public mutating func closed() -> Bool {
        guard case .ready = state else { return false }
        state = .disconnected
        return leavePool()
    }

    /// Its endpoint left: no new streams; it closes once none is open.
    public mutating func retire() -> IdleAction {
        retired = true
        return isIdle ? .close : .none
    }

    /// The pool closes idle connections (shutdown, a reload that drops the endpoint's cluster).
    public var isIdle: Bool {
        if case .ready(0) = state { return true }
        return false
    }

    /// The upstream sent GOAWAY: the streams it processed finish here, new requests go to another connection.
    public mutating func goAwayReceived() -> (leavePool: Bool, idle: IdleAction) {
        guard !retired else { return (false, .none) }
        let leaves = leavePool()
        return (leaves, retire())
    }

    public mutating func maxConcurrentStreamsChanged(to limit: Int) {
        peerMaxConcurrentStreams = limit
    }

    private func idleAction() -> IdleAction {
        guard isIdle else { return .none }
        return retired ? .close : .armIdleTimer
    }

    /// True the first time only.
    private mutating func leavePool() -> Bool {
        guard !leftPool else { return false }
        leftPool = true
        return true
    }
}
