import OutriggerConfig

/// One cluster's endpoint selection on one event loop: the current plan (which endpoints may be picked,
/// grouped by priority and zone, with their weights), a balancer per group, and the loads they share.
/// A class so a pick mutates it in place (a struct in a dictionary is copied out and back by some accessors).
public final class ClusterSelection {
    private var balancers: [LoadBalancer] = []
    private var groups: [SelectionPlan.Group] = []
    public var loads: EndpointLoads
    /// This loop's share of the cluster's retry budget.
    public var retryBudget: RetryBudget
    /// What the plan was made from: rebuilt when the endpoint set, the states' epoch or the clock says so.
    private var source: EndpointSet?
    private var epoch = -1
    private var reviewAt: UInt64 = 0
    private let config: LoadBalancerConfig
    private let stagger: Int

    public init(_ config: LoadBalancerConfig, budget: RetryBudgetConfig, loops: Int, stagger: Int) {
        self.config = config
        self.stagger = stagger
        self.loads = EndpointLoads(config)
        self.retryBudget = RetryBudget(budget, loops: loops)
    }

    /// A request's endpoint, from the plan's groups (drawn by their share) and their balancers; nil when none may be picked.
    public func pick(in cluster: ClusterRuntime, now: UInt64, random: inout FastRandom, hashKey: UInt64?) -> Endpoint? {
        let set = cluster.currentEndpointSet
        let currentEpoch = cluster.endpointStates.selectionEpoch.load(ordering: .acquiring)
        if set !== source || currentEpoch != epoch || now >= reviewAt {
            replan(cluster, set: set, epoch: currentEpoch, now: now)
        }
        switch groups.count {
        case 0:
            return nil
        case 1:
            return balancers[0].pick(from: groups[0].candidates, loads: loads, now: now, random: &random, hashKey: hashKey)
        default:
            let draw = Double(random.next() >> 11) / Double(1 << 53)
            let index = groups.firstIndex { draw < $0.upTo } ?? groups.count - 1
            return balancers[index].pick(from: groups[index].candidates, loads: loads, now: now, random: &random, hashKey: hashKey)
        }
    }

    /// A retry's endpoint: another than those already tried when the cluster has another eligible one (a few picks).
    public func pick(in cluster: ClusterRuntime, now: UInt64, random: inout FastRandom, avoiding tried: [Int]) -> Endpoint? {
        var candidate = pick(in: cluster, now: now, random: &random, hashKey: nil)
        for _ in 0..<4 where candidate.map({ tried.contains($0.id) }) == true {
            candidate = pick(in: cluster, now: now, random: &random, hashKey: nil)
        }
        return candidate
    }

    /// The endpoint whose breaker admits the request: `first`, or another picked avoiding those refused (and `tried`),
    /// a few picks at most; nil when none does. Without breakers, `first`.
    public func admitThroughBreaker(_ first: Endpoint, in cluster: ClusterRuntime, now: UInt64, random: inout FastRandom,
                                    tried: [Int]) -> Endpoint? {
        guard let config = cluster.breakers else { return first }
        var candidate: Endpoint? = first
        var seen = tried
        for _ in 0..<4 {
            guard let endpoint = candidate else { return nil }
            if endpoint.state.withBreaker(config, { $0.admit(now: now) }) { return endpoint }
            seen.append(endpoint.id)
            candidate = pick(in: cluster, now: now, random: &random, avoiding: seen)
            if let next = candidate, seen.contains(next.id) { return nil }
        }
        return nil
    }

    private func replan(_ cluster: ClusterRuntime, set: EndpointSet, epoch: Int, now: UInt64) {
        let plan = SelectionPlan(endpoints: set.endpoints, config: config, localZone: cluster.localZone, now: now)
        groups = plan.groups
        while balancers.count < groups.count { balancers.append(LoadBalancer(config, stagger: stagger)) }
        if balancers.count > groups.count { balancers.removeLast(balancers.count - groups.count) }
        if set !== source { loads.prune(keeping: set.endpoints) }
        source = set
        self.epoch = epoch
        reviewAt = plan.reviewAt
        cluster.stats.panicMode.store(plan.panic, ordering: .relaxed)
    }
}
