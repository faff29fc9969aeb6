#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import OutriggerConfig

/// What one event loop knows of an endpoint's load: its requests in flight from this loop, and a
/// peak-EWMA estimate of its latency (Linkerd's and tower's `PeakEwma`).
struct EndpointLoad {
    var active = 0
    /// Latency estimate in nanoseconds; it decays toward zero while no response arrives, so an endpoint
    /// that was slow is tried again after a while and can show it recovered.
    var estimate: Double
    /// When `estimate` was last updated, in nanoseconds of the balancer's clock.
    var stamp: UInt64

    /// The estimate decayed to `now`.
    func decayedEstimate(now: UInt64, decay: Double) -> Double {
        let elapsed = Double(now &- stamp)
        return now > stamp ? estimate * exp(-elapsed / decay) : estimate
    }

    /// A response head arrived `rtt` ns after its request was sent: a sample above the (decayed) estimate
    /// replaces it — peak sensitivity, slowness counts at once; one below is averaged in with the weight the
    /// time since the last update has earned (e^(-elapsed/decay) for the old value).
    mutating func record(rtt: Double, now: UInt64, decay: Double) {
        let current = decayedEstimate(now: now, decay: decay)
        if rtt > current {
            estimate = rtt
        } else {
            let kept = now > stamp ? exp(-Double(now - stamp) / decay) : 1
            estimate = current + rtt * (1 - kept)
        }
        stamp = now
    }
}

/// Picks the endpoint for each request of one cluster, on one event loop — a pure function of its state,
/// the endpoints, a clock reading and a seeded random source, so every policy is testable exactly.
///
/// - `round_robin`: smooth weighted round robin (nginx's): over a cycle of total-weight picks each endpoint
///   is picked exactly its weight times, spread out; equal weights give strict rotation.
/// - `random`: weighted random.
/// - `least_request`: power of two choices — two distinct endpoints at random, the one with fewer requests in
///   flight per unit of weight wins.
/// - `peak_ewma`: power of two choices on decayed peak-EWMA latency × (requests in flight + 1).
public struct LoadBalancer {
    public let config: LoadBalancerConfig
    private let decay: Double
    private let defaultRTT: Double
    /// The endpoint set the per-index state below belongs to; a new set resets it.
    private var endpointSet: EndpointSet?
    private var totalWeight = 0
    private var equalWeights = true
    /// round_robin: each endpoint's current weight.
    private var currentWeights: [Int] = []
    /// random: running sums of the weights.
    private var cumulativeWeights: [Int] = []
    /// least_request and peak_ewma: load by `Endpoint.id`, kept across endpoint-set changes so requests in
    /// flight to an endpoint that stays are still counted.
    private var loads: [Int: EndpointLoad] = [:]
    /// Staggers event loops so they do not all start with the same endpoint.
    private let stagger: Int

    public init(_ config: LoadBalancerConfig, stagger: Int = 0) {
        self.config = config
        self.decay = Double(config.decay.nanoseconds)
        self.defaultRTT = Double(config.defaultRTT.nanoseconds)
        self.stagger = stagger
    }

    /// The endpoint for the next request, or nil when the set is empty (→ 503 `no_healthy_upstream`).
    public mutating func pick(from set: EndpointSet, now: UInt64, random: inout FastRandom) -> Endpoint? {
        let endpoints = set.endpoints
        guard !endpoints.isEmpty else { return nil }
        if set !== endpointSet { adopt(set) }
        if endpoints.count == 1 { return endpoints[0] }
        switch config.policy {
        case .roundRobin:
            return endpoints[nextSmoothWeighted()]
        case .random:
            return endpoints[weightedRandomIndex(&random)]
        case .leastRequest:
            let (a, b) = twoDistinct(endpoints.count, &random)
            // Fewer in flight per unit of weight wins: compare active/weight without dividing.
            let loadA = (loads[endpoints[a].id]?.active ?? 0) + 1, loadB = (loads[endpoints[b].id]?.active ?? 0) + 1
            return loadA * endpoints[b].weight <= loadB * endpoints[a].weight ? endpoints[a] : endpoints[b]
        case .peakEWMA:
            let (a, b) = twoDistinct(endpoints.count, &random)
            return cost(endpoints[a], now: now) <= cost(endpoints[b], now: now) ? endpoints[a] : endpoints[b]
        }
    }

    /// A request was sent to `endpoint`.
    public mutating func requestStarted(_ endpoint: Endpoint, now: UInt64) {
        guard tracksLoad else { return }
        loads[endpoint.id, default: EndpointLoad(estimate: defaultRTT, stamp: now)].active += 1
    }

    /// The response head of a request to `endpoint` arrived `rtt` nanoseconds after the request was sent.
    public mutating func responseStarted(_ endpoint: Endpoint, rtt: UInt64, now: UInt64) {
        guard config.policy == .peakEWMA else { return }
        loads[endpoint.id, default: EndpointLoad(estimate: defaultRTT, stamp: now)].record(rtt: Double(rtt), now: now, decay: decay)
    }

    /// A request to `endpoint` ended, whatever its outcome.
    public mutating func requestEnded(_ endpoint: Endpoint) {
        guard tracksLoad, let load = loads[endpoint.id] else { return }
        loads[endpoint.id]!.active = max(load.active - 1, 0)
    }

    /// Requests in flight to `endpoint` from this event loop (for stats and tests).
    public func activeRequests(_ endpoint: Endpoint) -> Int {
        loads[endpoint.id]?.active ?? 0
    }

    private var tracksLoad: Bool { config.policy == .leastRequest || config.policy == .peakEWMA }

    private func cost(_ endpoint: Endpoint, now: UInt64) -> Double {
        guard let load = loads[endpoint.id] else { return defaultRTT }
        return load.decayedEstimate(now: now, decay: decay) * Double(load.active + 1) / Double(endpoint.weight)
    }

    private mutating func adopt(_ set: EndpointSet) {
        endpointSet = set
        let weights = set.endpoints.map(\.weight)
        totalWeight = weights.reduce(0, +)
        equalWeights = weights.allSatisfy { $0 == weights[0] }
        currentWeights = Array(repeating: 0, count: weights.count)
        var sum = 0
        cumulativeWeights = weights.map { weight in
            sum += weight
            return sum
        }
        if tracksLoad {
            let ids = Set(set.endpoints.map(\.id))
            loads = loads.filter { ids.contains($0.key) || $0.value.active > 0 }
        }
        if config.policy == .roundRobin {
            for _ in 0..<(stagger % max(weights.count, 1)) { _ = nextSmoothWeighted() }
        }
    }

    private mutating func nextSmoothWeighted() -> Int {
        let weights = endpointSet!.endpoints
        var best = 0
        for index in currentWeights.indices {
            currentWeights[index] += weights[index].weight
            if currentWeights[index] > currentWeights[best] { best = index }
        }
        currentWeights[best] -= totalWeight
        return best
    }

    private func weightedRandomIndex(_ random: inout FastRandom) -> Int {
        if equalWeights { return Int(random.next() % UInt64(cumulativeWeights.count)) }
        let target = Int(random.next() % UInt64(totalWeight))
        // The first running sum above `target`.
        var low = 0, high = cumulativeWeights.count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulativeWeights[middle] > target { high = middle } else { low = middle + 1 }
        }
        return low
    }

    private func twoDistinct(_ count: Int, _ random: inout FastRandom) -> (Int, Int) {
        let first = Int(random.next() % UInt64(count))
        var second = Int(random.next() % UInt64(count - 1))
        if second >= first { second += 1 }
        return (first, second)
    }
}
