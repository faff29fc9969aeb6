import OutriggerConfig

/// One endpoint's circuit breaker, as a pure state machine on a clock reading and a seeded random source:
/// closed → open after `consecutiveFailures` failures in a row, or a failure rate of at least
/// `failureRatePercent` over `window` once `minimumRequests` were seen; open for `openTime` × 2^(times
/// opened − 1), capped at `maxOpenTime`, with up to 10 % jitter; then half-open, admitting
/// `halfOpenRequests` probes at once: a success closes it, a failure opens it again for longer.
public struct CircuitBreaker: Sendable {
    public enum State: Equatable, Sendable {
        case closed
        case open(until: UInt64)
        case halfOpen
    }

    public let config: BreakerConfig
    public private(set) var state: State = .closed
    private var consecutiveFailures = 0
    private var timesOpened = 0
    private var probesInFlight = 0
    /// Successes (first) and failures (second) over the window.
    private var counts: SlidingWindowCounts

    public init(_ config: BreakerConfig) {
        self.config = config
        counts = SlidingWindowCounts(windowSeconds: Int(config.window.components.seconds))
    }

    /// May a request go to the endpoint now? (Half-open: counts it as a probe.)
    public mutating func admit(now: UInt64) -> Bool {
        if case .open(let until) = state {
            guard now >= until else { return false }
            state = .halfOpen
            probesInFlight = 0
        }
        guard state == .halfOpen else { return true }
        guard probesInFlight < config.halfOpenRequests else { return false }
        probesInFlight += 1
        return true
    }

    /// An admitted request ended without a verdict (its client left): its probe slot is free again.
    public mutating func abandon() {
        if state == .halfOpen { probesInFlight = max(probesInFlight - 1, 0) }
    }

    /// Records the outcome of an admitted request; returns the new state when it changed.
    public mutating func record(success: Bool, now: UInt64, random: inout FastRandom) -> State? {
        switch state {
        case .halfOpen:
            probesInFlight = max(probesInFlight - 1, 0)
            if success {
                state = .closed
                consecutiveFailures = 0
                counts.clear()
            } else {
                open(now: now, random: &random)
            }
            return state
        case .open:
            return nil  // a request admitted before it opened
        case .closed:
            if success {
                consecutiveFailures = 0
                counts.add(first: 1, now: now)
                return nil
            }
            consecutiveFailures += 1
            counts.add(second: 1, now: now)
            if config.consecutiveFailures > 0 && consecutiveFailures >= config.consecutiveFailures || rateExceeded(now: now) {
                open(now: now, random: &random)
                return state
            }
            return nil
        }
    }

    private func rateExceeded(now: UInt64) -> Bool {
        guard config.failureRatePercent > 0 else { return false }
        let (ok, failed) = counts.totals(now: now)
        let volume = ok + failed
        return volume >= config.minimumRequests && failed * 100 >= config.failureRatePercent * volume
    }

    private mutating func open(now: UInt64, random: inout FastRandom) {
        timesOpened += 1
        let base = config.openTime.nanoseconds << Int64(min(timesOpened - 1, 20))
        let capped = min(base, max(config.maxOpenTime, config.openTime).nanoseconds)
        let jitter = capped / 10 > 0 ? Int64(random.next() % UInt64(capped / 10)) : 0
        state = .open(until: now + UInt64(capped + jitter))
        consecutiveFailures = 0
        counts.clear()
    }
}
