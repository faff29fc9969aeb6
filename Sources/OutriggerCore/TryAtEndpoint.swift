/// A try's hold on its endpoint: which endpoint, since when, whether the try still counts in the endpoint's load (and
/// its failure streak), and whether it owes the endpoint's circuit breaker a verdict. The request's current try has
/// one, and a hedged try takes its over whole; each part of a hold is let go once.
public struct TryAtEndpoint {
    public let endpoint: Endpoint
    /// When the try started (uptime ns), for the cluster's try-duration histogram.
    public var startedAt: UInt64
    /// The try counts in its endpoint's load until it ends (or hands its hold to a hedge).
    public private(set) var countsAtEndpoint = true
    /// The breaker admitted the try and waits for its verdict.
    public private(set) var owesBreakerVerdict: Bool

    public init(endpoint: Endpoint, startedAt: UInt64, owesBreakerVerdict: Bool) {
        self.endpoint = endpoint
        self.startedAt = startedAt
        self.owesBreakerVerdict = owesBreakerVerdict
    }

    /// The breaker's due, taken: true when a verdict (or the release of its probe slot) is owed now; false after.
    public mutating func takeBreakerDebt() -> Bool {
        defer { owesBreakerVerdict = false }
        return owesBreakerVerdict
    }

    /// The try leaves its endpoint's load: true the first time.
    public mutating func leaveEndpoint() -> Bool {
        defer { countsAtEndpoint = false }
        return countsAtEndpoint
    }

    /// The hold passes to a hedged try, which takes it whole (load, breaker debt, start); this one keeps nothing.
    public mutating func handOver() -> TryAtEndpoint {
        let held = self
        countsAtEndpoint = false
        owesBreakerVerdict = false
        return held
    }
}
