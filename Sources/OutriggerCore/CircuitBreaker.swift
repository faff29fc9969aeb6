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
    /// Per-second buckets over the window: second, successes, failures.
    private var seconds: [UInt64]
    private var successes: [Int]
    private var failures: [Int]

    public init(_ config: BreakerConfig) {
        self.config = config
        let window = max(Int(config.window.components.seconds), 1)
        seconds = Array(repeating: .max, count: window)
        successes = Array(repeating: 0, count: window)
        failures = Array(repeating: 0, count: window)
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
                clearWindow()
            } else {
                open(now: now, random: &random)
            }
            return state
        case .open:
            return nil  // a request admitted before it opened
        case .closed:
            let index = bucket(now)
            if success {
                consecutiveFailures = 0
                successes[index] += 1
                return nil
            }
            consecutiveFailures += 1
            failures[index] += 1
            if config.consecutiveFailures > 0 && consecutiveFailures >= config.consecutiveFailures || rateExceeded(now: now) {
                open(now: now, random: &random)
                return state
            }
            return nil
        }
    }

    private func rateExceeded(now: UInt64) -> Bool {
        guard config.failureRatePercent > 0 else { return false }
        let second = now / 1_000_000_000
        var ok = 0, failed = 0
        for index in seconds.indices where seconds[index] != .max && second - seconds[index] < UInt64(seconds.count) {
            ok += successes[index]
            failed += failures[index]
        }
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
        clearWindow()
    }

    private mutating func clearWindow() {
        for index in seconds.indices { seconds[index] = .max }
    }

    private mutating func bucket(_ now: UInt64) -> Int {
        let second = now / 1_000_000_000
        let index = Int(second % UInt64(seconds.count))
        if seconds[index] != second {
            seconds[index] = second
            successes[index] = 0
            failures[index] = 0
        }
        return index
    }
}
