/// Decides when each request of a load test is sent, with no sockets and an injected clock.
///
/// Open loop (`rate` requests/s): request *i* is *intended* at `start + i / rate`, whether or not a
/// connection is free then. A connection that frees up late sends the next request at once, and its
/// latency is counted from the intended time — so a stalled server shows up as latency instead of
/// silently lowering the offered load (coordinated omission, as wrk2 and Nighthawk correct it).
/// Closed loop (`rate == nil`): every free connection sends at once; latency counts from the send.
public struct LoadScheduler: Sendable {
    public let rate: Double?
    /// Nanoseconds on the injected clock.
    public let start: UInt64
    public let end: UInt64
    private var nextIndex = 0

    public init(rate: Double?, start: UInt64, duration: UInt64) {
        precondition(rate.map { $0 > 0 } ?? true, "rate must be positive")
        self.rate = rate
        self.start = start
        self.end = start + duration
    }

    public enum Action: Equatable, Sendable {
        /// Send now; count latency from `intended`.
        case send(intended: UInt64)
        /// Nothing to send before `at`: ask again then.
        case wait(until: UInt64)
        /// The test is over for this connection.
        case stop
    }

    /// A connection is free at `now`: what should it do?
    public mutating func connectionFree(now: UInt64) -> Action {
        guard let rate else {
            return now < end ? .send(intended: now) : .stop
        }
        let intended = start + UInt64((Double(nextIndex) * 1_000_000_000 / rate).rounded())
        guard intended < end else { return .stop }
        if intended > now { return .wait(until: intended) }
        nextIndex += 1
        return .send(intended: intended)
    }

    /// Requests handed out so far (open loop).
    public var scheduled: Int { nextIndex }
}
