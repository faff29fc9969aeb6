import NIOCore
import NIOHTTP1
import OutriggerConfig
@testable import OutriggerCore
import Testing

/// A balancer with the loads it reads, as one event loop's `ClusterSelection` holds them.
struct Balancer {
    var balancer: LoadBalancer
    var loads: EndpointLoads

    init(_ config: LoadBalancerConfig, stagger: Int = 0) {
        balancer = LoadBalancer(config, stagger: stagger)
        loads = EndpointLoads(config)
    }

    mutating func pick(from set: EndpointSet, now: UInt64, random: inout FastRandom, hashKey: UInt64? = nil) -> Endpoint? {
        balancer.pick(from: set, loads: loads, now: now, random: &random, hashKey: hashKey)
    }

    mutating func requestStarted(_ endpoint: Endpoint, now: UInt64) { loads.requestStarted(endpoint, now: now) }
    mutating func responseStarted(_ endpoint: Endpoint, rtt: UInt64, now: UInt64) { loads.responseStarted(endpoint, rtt: rtt, now: now) }
    mutating func requestEnded(_ endpoint: Endpoint) { loads.requestEnded(endpoint) }
    func activeRequests(_ endpoint: Endpoint) -> Int { loads.activeRequests(endpoint) }
}

@Suite("Load balancers")
struct LoadBalancerTests {
    static let cluster = ClusterConfig(name: "c", endpoints: [HostPort(host: "127.0.0.1", port: 1)])

    /// Endpoints on ports 1…n with the given weights.
    static func endpoints(_ weights: [Int]) -> EndpointSet {
        EndpointSet(weights.enumerated().map { index, weight in
            Endpoint(configured: HostPort(host: "127.0.0.1", port: index + 1),
                     address: try! SocketAddress(ipAddress: "127.0.0.1", port: index + 1), cluster: cluster, metadata: EndpointMetadata(weight: weight))
        })
    }

    static func picks(_ balancer: inout Balancer, _ set: EndpointSet, count: Int, seed: UInt64 = 7, now: UInt64 = 0) -> [Int] {
        var random = FastRandom(seed: seed)
        return (0..<count).map { _ in balancer.pick(from: set, now: now, random: &random)!.configured.port }
    }

    static func shares(_ picks: [Int], of count: Int) -> [Double] {
        (1...count).map { port in Double(picks.filter { $0 == port }.count) / Double(picks.count) }
    }

    @Test func roundRobinRotatesStrictlyWithEqualWeights() {
        let set = Self.endpoints([1, 1, 1])
        var balancer = Balancer(LoadBalancerConfig())
        #expect(Self.picks(&balancer, set, count: 7) == [1, 2, 3, 1, 2, 3, 1])
        var staggered = Balancer(LoadBalancerConfig(), stagger: 1)
        #expect(Self.picks(&staggered, set, count: 3) == [2, 3, 1], "each event loop starts elsewhere")
        var random = FastRandom(seed: 1)
        #expect(balancer.pick(from: EndpointSet([]), now: 0, random: &random) == nil)
        let replaced = Self.endpoints([1, 1])
        #expect(Self.picks(&balancer, replaced, count: 4) == [1, 2, 1, 2], "a new endpoint set starts a new rotation")
    }

    @Test func roundRobinHonoursWeightsExactlyAndSpreadsThem() {
        let set = Self.endpoints([5, 1, 1])
        var balancer = Balancer(LoadBalancerConfig())
        let cycle = Self.picks(&balancer, set, count: 7)
        #expect(cycle == [1, 1, 2, 1, 3, 1, 1], "smooth: the heavy endpoint's picks are interleaved, not a burst of 5")
        let many = Self.picks(&balancer, set, count: 700)
        let counts = (1...3).map { port in many.filter { $0 == port }.count }
        #expect(counts == [500, 100, 100], "exact over whole cycles")
    }

    @Test func randomFollowsWeights() {
        let set = Self.endpoints([1, 3])
        var balancer = Balancer(LoadBalancerConfig(policy: .random))
        let shares = Self.shares(Self.picks(&balancer, set, count: 20_000), of: 2)
        #expect(abs(shares[1] - 0.75) < 0.02, "share of the weight-3 endpoint: \(shares[1])")
        var equal = Balancer(LoadBalancerConfig(policy: .random))
        let equalShares = Self.shares(Self.picks(&equal, Self.endpoints([1, 1, 1, 1]), count: 20_000), of: 4)
        #expect(equalShares.allSatisfy { abs($0 - 0.25) < 0.02 }, "\(equalShares)")
    }

    @Test func leastRequestAvoidsBusyEndpoints() {
        let set = Self.endpoints([1, 1, 1])
        var balancer = Balancer(LoadBalancerConfig(policy: .leastRequest))
        var random = FastRandom(seed: 3)
        _ = balancer.pick(from: set, now: 0, random: &random)
        for _ in 0..<5 { balancer.requestStarted(set.endpoints[0], now: 0) }
        let picks = Self.picks(&balancer, set, count: 300)
        #expect(!picks.contains(1), "two choices always include an idle endpoint, which beats the busy one")
        #expect(Set(picks) == [2, 3])
        for _ in 0..<5 { balancer.requestEnded(set.endpoints[0]) }
        #expect(balancer.activeRequests(set.endpoints[0]) == 0)
        #expect(Set(Self.picks(&balancer, set, count: 300)) == [1, 2, 3], "idle again, picked again")
    }

    @Test func leastRequestWeighsLoadByWeight() {
        // Endpoint 1 (weight 4) with 2 in flight still beats endpoint 2 (weight 1) with 1: 3/4 < 2/1.
        let set = Self.endpoints([4, 1])
        var balancer = Balancer(LoadBalancerConfig(policy: .leastRequest))
        _ = Self.picks(&balancer, set, count: 1)
        balancer.requestStarted(set.endpoints[0], now: 0)
        balancer.requestStarted(set.endpoints[0], now: 0)
        balancer.requestStarted(set.endpoints[1], now: 0)
        #expect(Set(Self.picks(&balancer, set, count: 50)) == [1])
    }

    @Test func peakEWMAAvoidsASlowEndpointAndRetriesItLater() {
        let set = Self.endpoints([1, 1, 1])
        let config = LoadBalancerConfig(policy: .peakEWMA, decay: .seconds(10), defaultRTT: .milliseconds(30))
        var balancer = Balancer(config)
        let ms: UInt64 = 1_000_000
        var now: UInt64 = 1_000 * ms
        _ = Self.picks(&balancer, set, count: 1, now: now)
        // One slow response (peak sensitivity: it counts at once) and fast ones from the others.
        balancer.requestStarted(set.endpoints[0], now: now)
        balancer.responseStarted(set.endpoints[0], rtt: 500 * ms, now: now)
        balancer.requestEnded(set.endpoints[0])
        for endpoint in set.endpoints.dropFirst() {
            balancer.requestStarted(endpoint, now: now)
            balancer.responseStarted(endpoint, rtt: 2 * ms, now: now)
            balancer.requestEnded(endpoint)
        }
        #expect(!Self.picks(&balancer, set, count: 200, now: now).contains(1))
        // Without new samples an estimate decays toward zero: a minute later (6 time constants) the slow
        // endpoint costs ~1.2 ms, less than the others that keep answering in 2 ms with a request in
        // flight each (2 ms × 2), so it is tried again.
        now += 60_000 * ms
        for endpoint in set.endpoints.dropFirst() {
            balancer.responseStarted(endpoint, rtt: 2 * ms, now: now)
            balancer.requestStarted(endpoint, now: now)
        }
        #expect(Set(Self.picks(&balancer, set, count: 200, now: now)).contains(1))
    }

    @Test func peakEWMAConvergesOnTheLatencyItSees() {
        var load = EndpointLoad(estimate: 100e6, stamp: 0)
        let decay = 10e9
        load.record(rtt: 300e6, now: 1_000_000_000, decay: decay)
        #expect(load.estimate == 300e6, "a sample above the estimate replaces it")
        // 10 ms samples once a second: the estimate falls as e^(-t/10 s) toward 10 ms.
        var estimates: [Double] = []
        for second in 2...61 {
            load.record(rtt: 10e6, now: UInt64(second) * 1_000_000_000, decay: decay)
            estimates.append(load.estimate)
        }
        #expect(zip(estimates, estimates.dropFirst()).allSatisfy { $0 >= $1 }, "falls steadily")
        #expect(abs(estimates[9] - (10e6 + 290e6 * 0.3679)) < 2e6, "one time constant in: \(estimates[9] / 1e6) ms")
        #expect(abs(load.estimate - 10e6) < 1e6, "after 6 time constants: \(load.estimate / 1e6) ms")
    }
}

@Suite("Consistent hashing")
struct ConsistentHashTests {
    static func assignments(_ policy: LoadBalancerConfig.Policy, _ set: EndpointSet, keys: Range<Int> = 0..<20_000) -> [Int] {
        var balancer = Balancer(LoadBalancerConfig(policy: policy, hashPolicy: .header("x-user")))
        var random = FastRandom(seed: 1)
        return keys.map { key in balancer.pick(from: set, now: 0, random: &random, hashKey: StableHash.of("user-\(key)"))!.configured.port }
    }

    @Test(arguments: [LoadBalancerConfig.Policy.ringHash, .maglev])
    func aKeyStaysOnItsEndpoint(policy: LoadBalancerConfig.Policy) {
        let set = LoadBalancerTests.endpoints(Array(repeating: 1, count: 5))
        #expect(Self.assignments(policy, set) == Self.assignments(policy, set), "same keys, same endpoints, every time")
        // Another balancer (another event loop, another sidecar) agrees: the ring is built from addresses.
        let rebuilt = LoadBalancerTests.endpoints(Array(repeating: 1, count: 5))
        #expect(Self.assignments(policy, set) == Self.assignments(policy, rebuilt))
    }

    @Test(arguments: [LoadBalancerConfig.Policy.ringHash, .maglev])
    func removingOneOfTenMovesAboutATenthOfTheKeys(policy: LoadBalancerConfig.Policy) {
        let ten = LoadBalancerTests.endpoints(Array(repeating: 1, count: 10))
        let nine = EndpointSet(Array(ten.endpoints.prefix(9)))  // port 10 removed
        let before = Self.assignments(policy, ten), after = Self.assignments(policy, nine)
        let moved = zip(before, after).filter { $0 != $1 }
        let movedAway = moved.filter { $0.0 != 10 }.count
        let share = Double(moved.count) / Double(before.count)
        #expect(share > 0.05 && share < 0.15, "\(policy.rawValue): \(share) of the keys moved; 1/N = 0.1")
        if policy == .ringHash {
            #expect(movedAway == 0, "on a ring only the removed endpoint's keys move")
        } else {
            #expect(Double(movedAway) / Double(before.count) < 0.02, "maglev moves few others: \(movedAway)")
        }
    }

    @Test func maglevSharesAreEvenToOneSlotAndFollowWeights() {
        let set = LoadBalancerTests.endpoints(Array(repeating: 1, count: 7))
        var balancer = Balancer(LoadBalancerConfig(policy: .maglev, hashPolicy: .clientAddress, maglevTableSize: 65537))
        var random = FastRandom(seed: 1)
        _ = balancer.pick(from: set, now: 0, random: &random, hashKey: 0)
        // Every slot of the table, as keys 0..<65537 map one to one onto slots.
        var counts = [Int: Int]()
        for key in 0..<UInt64(65537) { counts[balancer.pick(from: set, now: 0, random: &random, hashKey: key)!.configured.port, default: 0] += 1 }
        #expect(counts.values.max()! - counts.values.min()! <= 1, "\(counts)")

        let weighted = LoadBalancerTests.endpoints([1, 3])
        var weightedBalancer = Balancer(LoadBalancerConfig(policy: .maglev, hashPolicy: .clientAddress, maglevTableSize: 10007))
        var weightedCounts = [Int: Int]()
        for key in 0..<UInt64(10007) {
            weightedCounts[weightedBalancer.pick(from: weighted, now: 0, random: &random, hashKey: key)!.configured.port, default: 0] += 1
        }
        #expect(abs(Double(weightedCounts[2]!) / 10007 - 0.75) < 0.01, "\(weightedCounts)")
    }

    @Test func ringHashSharesFollowWeights() {
        let shares = LoadBalancerTests.shares(Self.assignments(.ringHash, LoadBalancerTests.endpoints([1, 1, 2])), of: 3)
        #expect(abs(shares[2] - 0.5) < 0.08 && abs(shares[0] - 0.25) < 0.08, "\(shares)")
    }

    @Test func keysComeFromAHeaderACookieOrTheClientAddress() {
        let headers: HTTPHeaders = ["X-User": "alice", "Cookie": "theme=dark; session=abc123"]
        #expect(LoadBalancerConfig.HashPolicy.header("x-user").key(headers: headers, clientAddress: nil) == StableHash.of("alice"))
        #expect(LoadBalancerConfig.HashPolicy.cookie("session").key(headers: headers, clientAddress: nil) == StableHash.of("abc123"))
        #expect(LoadBalancerConfig.HashPolicy.cookie("missing").key(headers: headers, clientAddress: nil) == nil)
        #expect(LoadBalancerConfig.HashPolicy.clientAddress.key(headers: headers, clientAddress: "10.0.0.7") == StableHash.of("10.0.0.7"))
        var random = FastRandom(seed: 1)
        var balancer = Balancer(LoadBalancerConfig(policy: .ringHash, hashPolicy: .header("x-user")))
        let set = LoadBalancerTests.endpoints([1, 1, 1])
        let picks = Set((0..<300).map { _ in balancer.pick(from: set, now: 0, random: &random, hashKey: nil)!.configured.port })
        #expect(picks == [1, 2, 3], "no key: spread at random")
    }
}
