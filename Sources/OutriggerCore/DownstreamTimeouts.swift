/// A downstream HTTP/1.1 connection's client-side timeouts, as a pure state machine on a clock reading:
/// - *request headers*: once the first byte of a request arrived, its whole head must within
///   `requestHeadersTimeout` (slow-header attacks) → 408 `request_timeout` and close;
/// - *idle*: a connection with no request in flight and no byte of a new one closes after `idleTimeout`.
/// The shell calls the events and asks `check(now:)` when its one timer fires; the decisions are exact at
/// the times it is asked.
public struct DownstreamTimeouts: Sendable {
    public enum Verdict: Equatable, Sendable {
        /// Nothing due; look again at this time (uptime ns).
        case checkAgain(at: UInt64)
        case closeIdle
        case requestTimeout
    }

    private let headersTimeout: UInt64
    private let idleLimit: UInt64
    /// Requests whose head arrived and whose response has not ended.
    private var outstanding = 0
    /// When the connection last had nothing to do.
    private var idleSince: UInt64
    /// When the first byte of a request still without its whole head arrived.
    private var headStartedAt: UInt64?

    public init(requestHeadersTimeout: Duration, idleTimeout: Duration, now: UInt64) {
        headersTimeout = UInt64(requestHeadersTimeout.nanoseconds)
        idleLimit = UInt64(idleTimeout.nanoseconds)
        idleSince = now
    }

    /// Whether arriving bytes would start a head's clock (nothing in flight, no head started): only then
    /// does `bytesArrived` need the time.
    public var awaitsHead: Bool { headStartedAt == nil && outstanding == 0 }

    /// Bytes arrived from the client.
    public mutating func bytesArrived(now: UInt64) {
        if headStartedAt == nil, outstanding == 0 { headStartedAt = now }
    }

    /// A whole request head was parsed.
    public mutating func headReceived() {
        outstanding += 1
        headStartedAt = nil
    }

    /// A response ended.
    public mutating func responseEnded(now: UInt64) {
        outstanding = max(outstanding - 1, 0)
        if outstanding == 0 { idleSince = now }
    }

    public func check(now: UInt64) -> Verdict {
        if let started = headStartedAt {
            return now - started >= headersTimeout ? .requestTimeout : .checkAgain(at: started + headersTimeout)
        }
        guard outstanding == 0 else { return .checkAgain(at: now + min(headersTimeout, idleLimit)) }
        // Idle: look again within a quarter of the headers timeout, so a request that starts arriving meanwhile
        // is seen by then (its 408 comes at most ¼ late) without re-arming the timer on every request.
        return now - idleSince >= idleLimit ? .closeIdle : .checkAgain(at: min(idleSince + idleLimit, now + headersTimeout / 4))
    }
}
