import Atomics
import NIOConcurrencyHelpers
import OutriggerConfig

/// What active health checking last concluded about an endpoint.
public enum EndpointHealth: UInt8, Sendable, CustomStringConvertible {
    /// Not checked (no health checks, or none finished yet): counts as healthy.
    case unchecked = 0
    case healthy = 1
    case unhealthy = 2

    public var description: String {
        switch self {
        case .unchecked: "unchecked"
        case .healthy: "healthy"
        case .unhealthy: "unhealthy"
        }
    }
}

/// An endpoint's shared, mutable state: health, drain, and what `/clusters` shows. One per endpoint per
/// process (kept across DNS changes and reloads while the endpoint stays), written by its health checker
/// and by responses on any event loop, read by every loop's balancer. Every change that alters which
/// endpoints may be picked bumps the shared `selectionEpoch`, so balancers rebuild only then.
public final class EndpointState: Sendable {
    private let healthValue = ManagedAtomic<UInt8>(EndpointHealth.unchecked.rawValue)
    /// Uptime nanoseconds until which the endpoint drains (0: not draining; `.max`: until told otherwise).
    private let drainingUntilValue = ManagedAtomic<UInt64>(0)
    /// When it last became eligible (added, recovered or undrained): slow start ramps from here.
    private let readySinceValue: ManagedAtomic<UInt64>
    private let latencyEstimateNanos = ManagedAtomic<UInt64>(0)
    private let selectionEpoch: ManagedAtomic<Int>
    /// Requests in flight to it, from every event loop.
    public let activeRequests = Gauge()
    /// Tries sent to it (first tries, retries and hedges), from every event loop.
    public let attempts = Counter()
    /// Its tries that failed: a 5xx answer, or none (connect failure, reset, timeout).
    public let failures = Counter()
    public let healthChecksPassed = Counter()
    public let healthChecksFailed = Counter()
    /// Outlier detection: failures in a row, the ejection in force (uptime ns; 0: none) and how many so far.
    let consecutive5xx = ManagedAtomic<Int>(0)
    let consecutiveGatewayFailures = ManagedAtomic<Int>(0)
    /// Requests and failures since the last failure-percentage sweep.
    let intervalRequests = ManagedAtomic<Int>(0)
    let intervalFailures = ManagedAtomic<Int>(0)
    private let ejectedUntilValue = ManagedAtomic<UInt64>(0)
    public let timesEjected = ManagedAtomic<Int>(0)
    /// The circuit breaker (created on first use, with its cluster's settings), and until when it is open
    /// (uptime ns; 0: not open) for selection plans to read without the lock.
    private let breaker = NIOLockedValueBox<CircuitBreaker?>(nil)
    private let breakerOpenUntilValue = ManagedAtomic<UInt64>(0)

    public init(now: UInt64, selectionEpoch: ManagedAtomic<Int> = ManagedAtomic(0)) {
        self.readySinceValue = ManagedAtomic(now)
        self.selectionEpoch = selectionEpoch
    }

    public var health: EndpointHealth { EndpointHealth(rawValue: healthValue.load(ordering: .relaxed)) ?? .unchecked }
    public var readySince: UInt64 { readySinceValue.load(ordering: .relaxed) }
    public var drainingUntil: UInt64 { drainingUntilValue.load(ordering: .relaxed) }

    public func isDraining(now: UInt64) -> Bool { now < drainingUntil }

    public var ejectedUntil: UInt64 { ejectedUntilValue.load(ordering: .relaxed) }

    public func isEjected(now: UInt64) -> Bool { now < ejectedUntil }

    public var breakerOpenUntil: UInt64 { breakerOpenUntilValue.load(ordering: .relaxed) }

    /// May a balancer pick it: not unhealthy, not draining, not ejected, its breaker not open?
    public func isEligible(now: UInt64) -> Bool {
        health != .unhealthy && !isDraining(now: now) && !isEjected(now: now) && now >= breakerOpenUntil
    }

    /// Runs `body` on the endpoint's breaker (made with `config`, or remade if the settings changed);
    /// publishes an opening or closing to selection plans.
    public func withBreaker<T>(_ config: BreakerConfig, _ body: (inout CircuitBreaker) -> T) -> T {
        let (result, state) = breaker.withLockedValue { stored -> (T, CircuitBreaker.State) in
            if stored?.config != config { stored = CircuitBreaker(config) }
            let result = body(&stored!)
            return (result, stored!.state)
        }
        let until: UInt64 = if case .open(let until) = state { until } else { 0 }
        // Written only on a change: every event loop reads this line, and most calls change nothing.
        if breakerOpenUntilValue.load(ordering: .relaxed) != until {
            breakerOpenUntilValue.store(until, ordering: .relaxed)
            bumpEpoch()
        }
        return result
    }

    /// The breaker's state, for `/clusters` (nil: never used).
    public var breakerState: CircuitBreaker.State? { breaker.withLockedValue { $0?.state } }

    /// Outlier detection takes it out until `until` (a plan reviews itself when that comes).
    func eject(until: UInt64) {
        ejectedUntilValue.store(until, ordering: .relaxed)
        timesEjected.wrappingIncrement(ordering: .relaxed)
        consecutive5xx.store(0, ordering: .relaxed)
        consecutiveGatewayFailures.store(0, ordering: .relaxed)
        bumpEpoch()
    }

    /// Records a health verdict; returns the previous one when it changed.
    @discardableResult
    public func setHealth(_ health: EndpointHealth, now: UInt64) -> EndpointHealth? {
        let previous = EndpointHealth(rawValue: healthValue.exchange(health.rawValue, ordering: .relaxed)) ?? .unchecked
        guard previous != health else { return nil }
        if previous == .unhealthy { readySinceValue.store(now, ordering: .relaxed) }
        if previous == .unhealthy || health == .unhealthy { bumpEpoch() }
        return previous
    }

    /// No new requests until `until` (uptime ns; `.max` for an admin drain). Returns true if it was not draining.
    @discardableResult
    public func drain(until: UInt64, now: UInt64) -> Bool {
        let previous = drainingUntilValue.exchange(until, ordering: .relaxed)
        // Extending a drain needs no new plan: a plan reviews itself when the drain it saw ends.
        guard previous <= now else { return false }
        bumpEpoch()
        return true
    }

    /// Ends a drain (a passing health check without the drain header, or an admin call).
    @discardableResult
    public func undrain(now: UInt64) -> Bool {
        let previous = drainingUntilValue.exchange(0, ordering: .relaxed)
        guard previous > now else { return false }
        readySinceValue.store(now, ordering: .relaxed)
        bumpEpoch()
        return true
    }

    /// The latest peak-EWMA latency estimate any event loop published (for `/clusters`; 0: none).
    public var latencyEstimate: UInt64 { latencyEstimateNanos.load(ordering: .relaxed) }

    public func publishLatencyEstimate(_ nanoseconds: UInt64) {
        latencyEstimateNanos.store(nanoseconds, ordering: .relaxed)
    }

    private func bumpEpoch() {
        selectionEpoch.wrappingIncrement(ordering: .releasing)
    }
}

/// Every endpoint's `EndpointState` in the process, by cluster and address, so that health and drain
/// outlive the `Endpoint` objects a DNS change or a reload replaces.
public final class EndpointStates: Sendable {
    /// Bumped by every state change that alters selection; balancers compare it on each pick.
    public let selectionEpoch = ManagedAtomic<Int>(0)
    private let states = NIOLockedValueBox<[String: EndpointState]>([:])
    /// Ejection decisions are made one at a time, so that a cluster's max ejection percentage holds exactly.
    private let ejectionLock = NIOLock()

    public init() {}

    public func withEjectionLock<T>(_ body: () -> T) -> T {
        ejectionLock.withLock(body)
    }

    public static func key(cluster: String, address: String, port: Int) -> String { "\(cluster)|\(address)|\(port)" }

    /// The state for `key`, created (ready since `now`) if it is new.
    public func state(for key: String, now: UInt64) -> EndpointState {
        states.withLockedValue { all in
            if let existing = all[key] { return existing }
            let created = EndpointState(now: now, selectionEpoch: selectionEpoch)
            all[key] = created
            // A new endpoint changes selection as soon as it is in a set; the set's identity says so already.
            return created
        }
    }

    /// Forgets endpoints no longer in any cluster (an endpoint that comes back starts afresh).
    public func retain(only keys: Set<String>) {
        states.withLockedValue { all in all = all.filter { keys.contains($0.key) } }
    }

    public var count: Int { states.withLockedValue { $0.count } }
}
