import NIOCore
import OutriggerConfig
@testable import OutriggerCore
import Testing

@Suite("Cluster selection: an event loop's picks, a retry's, and the breakers' admission")
struct ClusterSelectionTests {
    static func cluster(endpoints: Int, breakers: BreakerConfig? = nil) -> ClusterRuntime {
        let hosts = (1...endpoints).map { HostPort(host: "127.0.0.1", port: $0) }
        let config = ClusterConfig(name: "c", endpoints: hosts, breakers: breakers)
        return ClusterRuntime(config: config, endpoints: hosts.map(Self.endpoint(config)), stats: ProxyStats().cluster("c"))
    }

    static func endpoint(_ config: ClusterConfig) -> (HostPort) -> Endpoint {
        { Endpoint(configured: $0, address: try! SocketAddress(ipAddress: "127.0.0.1", port: $0.port), cluster: config) }
    }

    static func selection(for cluster: ClusterRuntime) -> ClusterSelection {
        ClusterSelection(cluster.config.loadBalancer, budget: cluster.config.retryBudget, loops: 1, stagger: 0)
    }

    @Test func aRetryGoesToAnEndpointNotTriedWhileThereIsOne() {
        let cluster = Self.cluster(endpoints: 3)
        let selection = Self.selection(for: cluster)
        var random = FastRandom(seed: 3)
        let ids = cluster.endpoints.map(\.id)
        for _ in 0..<6 {
            let pick = selection.pick(in: cluster, now: 1_000, random: &random, avoiding: [ids[0], ids[1]])
            #expect(pick?.id == ids[2])
        }
        let single = Self.cluster(endpoints: 1)
        let only = Self.selection(for: single).pick(in: single, now: 1_000, random: &random, avoiding: [single.endpoints[0].id])
        #expect(only?.id == single.endpoints[0].id, "no other: the one tried is tried again")
    }

    @Test func newEndpointsArePickedFromAtOnce() {
        let cluster = Self.cluster(endpoints: 2)
        let selection = Self.selection(for: cluster)
        var random = FastRandom(seed: 3)
        #expect(selection.pick(in: cluster, now: 1_000, random: &random, hashKey: nil) != nil)
        let replacement = Self.endpoint(cluster.config)(HostPort(host: "127.0.0.1", port: 9))
        cluster.replaceEndpoints([replacement])
        for _ in 0..<3 {
            #expect(selection.pick(in: cluster, now: 1_000, random: &random, hashKey: nil)?.id == replacement.id)
        }
    }

    @Test func anOpenBreakerSendsTheRequestToAnotherEndpointAndAllOpenToNone() {
        let cluster = Self.cluster(endpoints: 2, breakers: BreakerConfig(consecutiveFailures: 2))
        let selection = Self.selection(for: cluster)
        var random = FastRandom(seed: 3)
        let (first, second) = (cluster.endpoints[0], cluster.endpoints[1])
        #expect(selection.admitThroughBreaker(first, in: cluster, now: 1_000, random: &random, tried: [])?.id == first.id)
        for _ in 0..<2 {
            cluster.recordTry(.serverError(status: 503), at: first, owesBreakerVerdict: true, countsForOutliers: true, random: &random,
                              clock: { 1_000 })
        }
        #expect(selection.admitThroughBreaker(first, in: cluster, now: 1_000, random: &random, tried: [])?.id == second.id)
        for _ in 0..<2 {
            cluster.recordTry(.serverError(status: 503), at: second, owesBreakerVerdict: true, countsForOutliers: true, random: &random,
                              clock: { 1_000 })
        }
        #expect(selection.admitThroughBreaker(first, in: cluster, now: 1_000, random: &random, tried: []) == nil)

        let unguarded = Self.cluster(endpoints: 1)
        #expect(Self.selection(for: unguarded).admitThroughBreaker(unguarded.endpoints[0], in: unguarded, now: 1_000, random: &random,
                                                                      tried: [])?.id == unguarded.endpoints[0].id)
    }
}
