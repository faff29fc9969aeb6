/// A downstream HTTP/2 connection's client-side timeouts, as a pure state machine on a clock reading (the
/// HTTP/2 counterpart of `DownstreamTimeouts`):
/// - *idle*: a connection with no open stream and no header block on the way closes after `idleTimeout`
///   (Envoy's `idle_timeout`); control frames (PING, SETTINGS) do not keep it open;
/// - *header block*: a HEADERS frame without END_HEADERS must be completed by its CONTINUATION frames within
///   `requestHeadersTimeout`, or the connection closes: the codec makes no stream of it until then, so
///   nothing else would time it.
/// The shell reports frames and streams and asks `check(now:)` when its one timer fires.
public struct HTTP2ConnectionTimeouts: Sendable {
    public enum Verdict: Equatable, Sendable {
        /// Nothing due; look again at this time (uptime ns).
        case checkAgain(at: UInt64)
        case closeIdle
        case headerBlockTimedOut
    }

    private let headersTimeout: UInt64
    private let idleLimit: UInt64
    private var openStreams = 0
    /// When the last stream closed (or the connection began).
    private var idleSince: UInt64
    /// When a header block still without its END_HEADERS began.
    private var headerBlockStartedAt: UInt64?

    public init(requestHeadersTimeout: Duration, idleTimeout: Duration, now: UInt64) {
        headersTimeout = UInt64(requestHeadersTimeout.nanoseconds)
        idleLimit = UInt64(idleTimeout.nanoseconds)
        idleSince = now
    }

    public mutating func streamOpened() {
        openStreams += 1
    }

    public mutating func streamClosed(now: UInt64) {
        openStreams = max(openStreams - 1, 0)
        if openStreams == 0 { idleSince = now }
    }

    /// A HEADERS or PUSH_PROMISE frame without END_HEADERS arrived. Returns when the connection must be
    /// looked at again for it: the shell re-arms its timer if that is earlier than the one it has.
    public mutating func headerBlockStarted(now: UInt64) -> UInt64 {
        if headerBlockStartedAt == nil { headerBlockStartedAt = now }
        return headerBlockStartedAt! + headersTimeout
    }

    /// A CONTINUATION frame with END_HEADERS arrived.
    public mutating func headerBlockEnded() {
        headerBlockStartedAt = nil
    }

    public func check(now: UInt64) -> Verdict {
        if let started = headerBlockStartedAt {
            return now - started >= headersTimeout ? .headerBlockTimedOut : .checkAgain(at: started + headersTimeout)
        }
        guard openStreams == 0 else { return .checkAgain(at: now + idleLimit) }
        return now - idleSince >= idleLimit ? .closeIdle : .checkAgain(at: idleSince + idleLimit)
    }
}
