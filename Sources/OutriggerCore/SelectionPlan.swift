#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import OutriggerConfig

/// Which endpoints a cluster's balancer may pick right now, and with what weights: a pure function of the
/// endpoints' states, the cluster's balancer settings, the sidecar's zone and a clock reading.
///
/// - Only eligible endpoints (not unhealthy, not draining, not ejected by outlier detection) are candidates.
/// - Priorities: priority 0 takes min(100 %, 1.4 × its healthy share) of the traffic, priority 1 as much of
///   the rest as 1.4 × its healthy share allows, and so on (Envoy's overprovisioning factor); when the
///   levels together cannot take 100 %, their shares are scaled up to it. Traffic therefore stays in the
///   highest priority while more than ~71 % of it is healthy and spills over in proportion to health.
/// - Zones: within a level, endpoints in the sidecar's own zone get min(100 %, 1.4 × their healthy share)
///   of that level's traffic, the other zones the rest.
/// - Panic: a level whose healthy share is under `panicThreshold` % uses all its endpoints, healthy or not
///   (draining ones still left out while any other remains): better some errors than all traffic on a few.
/// - Slow start: an endpoint's weight is scaled by max(minWeightPercent, (age / window)^(1/aggression))
///   until `window` has passed since it became ready.
public struct SelectionPlan: Sendable {
    public struct Group: Sendable {
        /// The group serves picks whose uniform draw in [0, 1) falls below this (and above the previous group's).
        public let upTo: Double
        public let candidates: EndpointSet
    }

    public let groups: [Group]
    /// Some level is in panic mode.
    public let panic: Bool
    /// When the plan must be made again even if nothing else changes (a drain ends, a slow start steps).
    public let reviewAt: UInt64

    public static let overprovisioningFactor = 1.4
    /// How many steps a slow-start ramp is made of.
    public static let slowStartSteps: UInt64 = 20

    public init(endpoints: [Endpoint], config: LoadBalancerConfig, localZone: String?, now: UInt64) {
        var reviewAt = UInt64.max
        var eligible: [Bool] = []
        eligible.reserveCapacity(endpoints.count)
        for endpoint in endpoints {
            eligible.append(endpoint.state.isEligible(now: now))
            // Drains and ejections end by themselves: the plan is made again then.
            for until in [endpoint.state.drainingUntil, endpoint.state.ejectedUntil, endpoint.state.breakerOpenUntil] where until > now {
                reviewAt = min(reviewAt, until)
            }
        }
        let levels = Set(endpoints.map(\.priority)).sorted()
        var healthShares: [Double] = []
        var loads: [Double] = []
        var remaining = 1.0
        for level in levels {
            let members = endpoints.indices.filter { endpoints[$0].priority == level }
            let share = Double(members.filter { eligible[$0] }.count) / Double(members.count)
            healthShares.append(share)
            let load = min(remaining, share * Self.overprovisioningFactor)
            loads.append(load)
            remaining -= load
        }
        let total = loads.reduce(0, +)
        if total == 0, !loads.isEmpty {
            // Nothing is healthy anywhere: the first level takes everything (panic decides whether to use it).
            loads[0] = 1
        } else if total < 1 {
            loads = loads.map { $0 / total }
        }

        var groups: [Group] = []
        var panic = false
        var upTo = 0.0
        func add(_ members: [Int], share: Double) {
            guard share > 0, !members.isEmpty else { return }
            upTo += share
            let chosen = members.map { endpoints[$0] }
            groups.append(Group(upTo: upTo, candidates: EndpointSet(chosen, weights: Self.weights(chosen, config: config, now: now, reviewAt: &reviewAt))))
        }
        for (position, level) in levels.enumerated() where loads[position] > 0 {
            let members = endpoints.indices.filter { endpoints[$0].priority == level }
            if config.panicThreshold > 0, healthShares[position] * 100 < Double(config.panicThreshold) {
                panic = true
                let notDraining = members.filter { !endpoints[$0].state.isDraining(now: now) }
                add(notDraining.isEmpty ? members : notDraining, share: loads[position])
                continue
            }
            let candidates = members.filter { eligible[$0] }
            guard let localZone else {
                add(candidates, share: loads[position])
                continue
            }
            let local = candidates.filter { endpoints[$0].zone == localZone }
            let localTotal = members.filter { endpoints[$0].zone == localZone }.count
            guard !local.isEmpty, local.count < candidates.count else {
                add(candidates, share: loads[position])
                continue
            }
            let localShare = min(1, Double(local.count) / Double(localTotal) * Self.overprovisioningFactor)
            add(local, share: loads[position] * localShare)
            add(candidates.filter { endpoints[$0].zone != localZone }, share: loads[position] * (1 - localShare))
        }
        // Rounding must not leave a sliver of the [0, 1) range without a group.
        if let last = groups.last { groups[groups.count - 1] = Group(upTo: .infinity, candidates: last.candidates) }
        self.groups = groups
        self.panic = panic
        self.reviewAt = reviewAt
    }

    /// Balancer weights: the endpoints' own, scaled down during slow start (×100 so the ramp has steps).
    static func weights(_ endpoints: [Endpoint], config: LoadBalancerConfig, now: UInt64, reviewAt: inout UInt64) -> [Int] {
        guard let slowStart = config.slowStart else { return endpoints.map(\.weight) }
        let window = UInt64(slowStart.window.nanoseconds)
        return endpoints.map { endpoint in
            guard let factor = slowStartFactor(readySince: endpoint.state.readySince, now: now, slowStart) else { return endpoint.weight * 100 }
            reviewAt = min(reviewAt, now + max(window / slowStartSteps, 1))
            return max(1, Int(Double(endpoint.weight * 100) * factor))
        }
    }

    /// The share of its weight an endpoint ready since `readySince` gets now (0 < factor < 1); nil once its slow
    /// start is over.
    public static func slowStartFactor(readySince: UInt64, now: UInt64, _ slowStart: LoadBalancerConfig.SlowStart) -> Double? {
        let window = UInt64(slowStart.window.nanoseconds)
        let age = now > readySince ? now - readySince : 0
        guard age < window else { return nil }
        let ramp = pow(Double(age) / Double(window), 1 / slowStart.aggression)
        return max(Double(slowStart.minWeightPercent) / 100, ramp)
    }
}
