/// What the peer (a client downstream, an upstream server) may send an HTTP/2 connection that costs this side work
/// without serving a request — SETTINGS, empty DATA frames that do not end their stream, frames answered with a
/// stream error — counted per period: past the budget the peer is flooding (the CVE-2019-9512/9518 family), and the
/// connection ends with ENHANCE_YOUR_CALM. PINGs are not counted (gRPC clients ping with every burst of data); their
/// answers are bounded while the peer does not read (`HTTP2Codec`).
public struct HTTP2FloodGuard: Sendable {
    public let budget: Int
    public let periodNanoseconds: UInt64
    private var spent = 0
    private var periodStart: UInt64?

    public init(budget: Int = 1000, periodNanoseconds: UInt64 = 30_000_000_000) {
        self.budget = budget
        self.periodNanoseconds = periodNanoseconds
    }

    /// One such frame, at `now` (uptime nanoseconds). - Returns: whether the budget is now spent.
    public mutating func counted(now: UInt64) -> Bool {
        if let periodStart, now &- periodStart < periodNanoseconds {
            spent += 1
        } else {
            periodStart = now
            spent = 1
        }
        return spent > budget
    }
}
