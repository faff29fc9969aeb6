#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import NIOHTTP1
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

extension LoadBalancerConfig.HashPolicy {
    /// The request's hash key, or nil when it lacks what the policy hashes (it then goes to a random endpoint).
    public func key(headers: HTTPHeaders, clientAddress: String?) -> UInt64? {
        switch self {
        case .header(let name):
            return headers.first(name: name).map(StableHash.of)
        case .cookie(let name, _):
            for header in headers[canonicalForm: "cookie"] {
                for pair in header.split(separator: ";") {
                    let trimmed = pair.drop { $0 == " " }
                    guard let equals = trimmed.firstIndex(of: "="), trimmed[..<equals] == name else { continue }
                    return StableHash.of(trimmed[trimmed.index(after: equals)...])
                }
            }
            return nil
        case .clientAddress:
            return clientAddress.map(StableHash.of)
        }
    }
}

/// A 64-bit hash that is the same in every process and run (FNV-1a, then a SplitMix64 finaliser so that
/// nearby inputs spread over the whole range): consistent hashing needs every sidecar to agree.
public enum StableHash {
    public static func of<Text: StringProtocol>(_ text: Text) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return mix(hash)
    }

    @inline(__always)
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// What one event loop knows of the load on a cluster's endpoints (requests in flight, peak-EWMA latency),
/// by `Endpoint.id`. Kept apart from the balancers so it survives their rebuilds: requests in flight to an
/// endpoint that stays are still counted when the candidates change.
public struct EndpointLoads {
    private var loads: [Int: EndpointLoad] = [:]
    private let tracksLoad: Bool
    private let tracksLatency: Bool
    private let decay: Double
    private let defaultRTT: Double

    public init(_ config: LoadBalancerConfig) {
        tracksLoad = config.policy == .leastRequest || config.policy == .peakEWMA
        tracksLatency = config.policy == .peakEWMA
        decay = Double(config.decay.nanoseconds)
        defaultRTT = Double(config.defaultRTT.nanoseconds)
    }

    /// A request was sent to `endpoint`.
    public mutating func requestStarted(_ endpoint: Endpoint, now: UInt64) {
        guard tracksLoad else { return }
        loads[endpoint.id, default: EndpointLoad(estimate: defaultRTT, stamp: now)].active += 1
    }

    /// The response head of a request to `endpoint` arrived `rtt` nanoseconds after the request was sent;
    /// returns the new latency estimate (nil unless peak_ewma).
    @discardableResult
    public mutating func responseStarted(_ endpoint: Endpoint, rtt: UInt64, now: UInt64) -> Double? {
        guard tracksLatency else { return nil }
        loads[endpoint.id, default: EndpointLoad(estimate: defaultRTT, stamp: now)].record(rtt: Double(rtt), now: now, decay: decay)
        return loads[endpoint.id]?.estimate
    }

    /// A request to `endpoint` ended, whatever its outcome.
    public mutating func requestEnded(_ endpoint: Endpoint) {
        guard tracksLoad, let load = loads[endpoint.id] else { return }
        loads[endpoint.id]!.active = max(load.active - 1, 0)
    }

    /// Requests in flight to `endpoint` from this event loop.
    public func activeRequests(_ endpoint: Endpoint) -> Int {
        loads[endpoint.id]?.active ?? 0
    }

    /// Forgets endpoints that left and have nothing in flight.
    public mutating func prune(keeping endpoints: [Endpoint]) {
        guard tracksLoad else { return }
        let ids = Set(endpoints.map(\.id))
        loads = loads.filter { ids.contains($0.key) || $0.value.active > 0 }
    }

    /// least_request: in flight + 1, per unit of weight, compared without dividing.
    func lessLoaded(_ a: Endpoint, weight weightA: Int, than b: Endpoint, weight weightB: Int) -> Bool {
        let loadA = (loads[a.id]?.active ?? 0) + 1, loadB = (loads[b.id]?.active ?? 0) + 1
        return loadA * weightB <= loadB * weightA
    }

    /// peak_ewma: decayed latency × (in flight + 1) / weight.
    func cost(_ endpoint: Endpoint, weight: Int, now: UInt64) -> Double {
        guard let load = loads[endpoint.id] else { return defaultRTT / Double(weight) }
        return load.decayedEstimate(now: now, decay: decay) * Double(load.active + 1) / Double(weight)
    }
}

/// Picks the endpoint for each request among one set of candidates, on one event loop — a pure function of
/// its state, the candidates, the loads, a clock reading and a seeded random source, so every policy is
/// testable exactly.
///
/// - `round_robin`: smooth weighted round robin (nginx's): over a cycle of total-weight picks each endpoint
///   is picked exactly its weight times, spread out; equal weights give strict rotation.
/// - `random`: weighted random.
/// - `least_request`: power of two choices — two distinct endpoints at random, the one with fewer requests in
///   flight per unit of weight wins.
/// - `peak_ewma`: power of two choices on decayed peak-EWMA latency × (requests in flight + 1).
/// - `ring_hash`: a Ketama ring, points per endpoint in proportion to its weight; a key goes to the first point
///   at or after its hash. Removing an endpoint moves only the keys that were on it.
/// - `maglev`: Google's Maglev lookup table (a prime size, filled by each endpoint's permutation in turn, in
///   proportion to weight): shares even to one slot, removal moves about 1/N of the keys.
///
/// Rings and tables place endpoints by their *addresses* (never by list position or object identity), so
/// every event loop and every sidecar builds the same ones and sends a given key to the same endpoint.
public struct LoadBalancer {
    public let config: LoadBalancerConfig
    /// The candidates the per-index state below belongs to; a new set resets it.
    private var endpointSet: EndpointSet?
    private var totalWeight = 0
    private var equalWeights = true
    /// round_robin: each endpoint's current weight.
    private var currentWeights: [Int] = []
    /// random: running sums of the weights.
    private var cumulativeWeights: [Int] = []
    /// Staggers event loops so they do not all start with the same endpoint.
    private let stagger: Int
    /// ring_hash: point hashes, sorted, and the endpoint index of each.
    private var ringHashes: [UInt64] = []
    private var ringOwners: [Int32] = []
    /// maglev: the lookup table of endpoint indices.
    private var maglevTable: [Int32] = []

    public init(_ config: LoadBalancerConfig, stagger: Int = 0) {
        self.config = config
        self.stagger = stagger
    }

    /// The endpoint for the next request, or nil when the set is empty (→ 503 `no_healthy_upstream`).
    /// `hashKey` is the request's key for ring_hash and maglev (nil: a random endpoint).
    public mutating func pick(from set: EndpointSet, loads: EndpointLoads, now: UInt64, random: inout FastRandom,
                              hashKey: UInt64? = nil) -> Endpoint? {
        let endpoints = set.endpoints
        guard !endpoints.isEmpty else { return nil }
        if set !== endpointSet { adopt(set) }
        if endpoints.count == 1 { return endpoints[0] }
        let weights = set.weights
        switch config.policy {
        case .roundRobin:
            return endpoints[nextSmoothWeighted()]
        case .random:
            return endpoints[weightedRandomIndex(&random)]
        case .leastRequest:
            let (a, b) = twoDistinct(endpoints.count, &random)
            return loads.lessLoaded(endpoints[a], weight: weights[a], than: endpoints[b], weight: weights[b]) ? endpoints[a] : endpoints[b]
        case .peakEWMA:
            let (a, b) = twoDistinct(endpoints.count, &random)
            return loads.cost(endpoints[a], weight: weights[a], now: now) <= loads.cost(endpoints[b], weight: weights[b], now: now)
                ? endpoints[a] : endpoints[b]
        case .ringHash:
            guard let hashKey else { return endpoints[weightedRandomIndex(&random)] }
            // The first point at or after the key, wrapping around.
            var low = 0, high = ringHashes.count
            while low < high {
                let middle = (low + high) / 2
                if ringHashes[middle] < hashKey { low = middle + 1 } else { high = middle }
            }
            return endpoints[Int(ringOwners[low == ringHashes.count ? 0 : low])]
        case .maglev:
            guard let hashKey else { return endpoints[weightedRandomIndex(&random)] }
            return endpoints[Int(maglevTable[Int(hashKey % UInt64(maglevTable.count))])]
        }
    }

    private mutating func adopt(_ set: EndpointSet) {
        endpointSet = set
        let weights = set.weights
        totalWeight = weights.reduce(0, +)
        equalWeights = weights.allSatisfy { $0 == weights[0] }
        currentWeights = Array(repeating: 0, count: weights.count)
        var sum = 0
        cumulativeWeights = weights.map { weight in
            sum += weight
            return sum
        }
        if config.policy == .roundRobin {
            for _ in 0..<(stagger % max(weights.count, 1)) { _ = nextSmoothWeighted() }
        }
        if config.policy == .ringHash { buildRing(set) }
        if config.policy == .maglev { buildMaglevTable(set) }
    }

    /// The hash an endpoint is known by: its address, the same in every loop and every process.
    static func identity(_ endpoint: Endpoint) -> UInt64 {
        StableHash.of("\(endpoint.address.ipAddress ?? endpoint.configured.host):\(endpoint.configured.port)")
    }

    private mutating func buildRing(_ set: EndpointSet) {
        let endpoints = set.endpoints
        let total = min(max(1024, 128 * endpoints.count), 1 << 20)
        var points: [(hash: UInt64, owner: Int32)] = []
        points.reserveCapacity(total + endpoints.count)
        for (index, endpoint) in endpoints.enumerated() {
            let identity = Self.identity(endpoint)
            let count = max(1, Int((Double(total) * Double(set.weights[index]) / Double(totalWeight)).rounded()))
            for point in 0..<count {
                points.append((StableHash.mix(identity &+ UInt64(point) &* 0x9E37_79B9_7F4A_7C15), Int32(index)))
            }
        }
        points.sort { $0.hash < $1.hash }
        ringHashes = points.map(\.hash)
        ringOwners = points.map(\.owner)
    }

    private mutating func buildMaglevTable(_ set: EndpointSet) {
        let endpoints = set.endpoints
        let size = config.maglevTableSize
        let identities = endpoints.map(Self.identity)
        let offsets = identities.map { Int(StableHash.mix($0 ^ 0xA5A5_A5A5_A5A5_A5A5) % UInt64(size)) }
        let skips = identities.map { Int(StableHash.mix($0 ^ 0x5A5A_5A5A_5A5A_5A5A) % UInt64(size - 1)) + 1 }
        let heaviest = Double(set.weights.max() ?? 1)
        var table = [Int32](repeating: -1, count: size)
        var nextPosition = [Int](repeating: 0, count: endpoints.count)
        var credit = [Double](repeating: 0, count: endpoints.count)
        var filled = 0
        fill: while true {
            for index in endpoints.indices {
                // Each turn an endpoint earns weight/heaviest of a slot: equal weights take one slot per turn.
                credit[index] += Double(set.weights[index]) / heaviest
                while credit[index] >= 1 {
                    credit[index] -= 1
                    var slot = (offsets[index] + nextPosition[index] * skips[index]) % size
                    while table[slot] >= 0 {
                        nextPosition[index] += 1
                        slot = (offsets[index] + nextPosition[index] * skips[index]) % size
                    }
                    table[slot] = Int32(index)
                    nextPosition[index] += 1
                    filled += 1
                    if filled == size { break fill }
                }
            }
        }
        maglevTable = table
    }

    private mutating func nextSmoothWeighted() -> Int {
        let weights = endpointSet!.weights
        var best = 0
        for index in currentWeights.indices {
            currentWeights[index] += weights[index]
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
