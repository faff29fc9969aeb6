import NIOCore
import OutriggerConfig
@testable import OutriggerCore
import Testing

@Suite("Endpoint selection: health, drain, priorities, zones, panic, slow start")
struct SelectionPlanTests {
    static let second: UInt64 = 1_000_000_000
    static let cluster = ClusterConfig(name: "c", endpoints: [])

    /// Endpoints on ports 1…n, each with its metadata, all ready since time 0.
    static func endpoints(_ metadata: [EndpointMetadata]) -> [Endpoint] {
        metadata.enumerated().map { index, metadata in
            Endpoint(configured: HostPort(host: "127.0.0.1", port: index + 1),
                     address: try! SocketAddress(ipAddress: "127.0.0.1", port: index + 1), cluster: cluster,
                     metadata: metadata, state: EndpointState(now: 0))
        }
    }

    static func ports(_ group: SelectionPlan.Group) -> [Int] { group.candidates.endpoints.map(\.configured.port) }

    @Test func unhealthyAndDrainingEndpointsAreLeftOut() {
        let endpoints = Self.endpoints(Array(repeating: EndpointMetadata(), count: 4))
        endpoints[1].state.setHealth(.unhealthy, now: 0)
        endpoints[2].state.drain(until: 50 * Self.second, now: 0)
        let plan = SelectionPlan(endpoints: endpoints, config: LoadBalancerConfig(panicThreshold: 0), localZone: nil, now: Self.second)
        #expect(plan.groups.map(Self.ports) == [[1, 4]])
        #expect(plan.reviewAt == 50 * Self.second, "the plan is made again when the drain ends")
        #expect(!plan.panic)
        let later = SelectionPlan(endpoints: endpoints, config: LoadBalancerConfig(panicThreshold: 0), localZone: nil, now: 50 * Self.second)
        #expect(later.groups.map(Self.ports) == [[1, 3, 4]], "a drain ends by itself")
    }

    @Test func trafficStaysInTheFirstPriorityWhileEnoughOfItIsHealthy() {
        // Priority 0: ports 1–4; priority 1: ports 5–6.
        let endpoints = Self.endpoints([0, 0, 0, 0, 1, 1].map { EndpointMetadata(priority: $0) })
        let config = LoadBalancerConfig(panicThreshold: 0)
        var plan = SelectionPlan(endpoints: endpoints, config: config, localZone: nil, now: 0)
        #expect(plan.groups.map(Self.ports) == [[1, 2, 3, 4]])
        // 3 of 4 healthy: 75 % × 1.4 ≥ 100 %, still all in priority 0.
        endpoints[0].state.setHealth(.unhealthy, now: 0)
        plan = SelectionPlan(endpoints: endpoints, config: config, localZone: nil, now: 0)
        #expect(plan.groups.map(Self.ports) == [[2, 3, 4]])
        // 2 of 4: priority 0 takes 70 %, priority 1 the other 30 %.
        endpoints[1].state.setHealth(.unhealthy, now: 0)
        plan = SelectionPlan(endpoints: endpoints, config: config, localZone: nil, now: 0)
        #expect(plan.groups.map(Self.ports) == [[3, 4], [5, 6]])
        #expect(abs(plan.groups[0].upTo - 0.7) < 1e-9)
        // None in priority 0: all to priority 1.
        endpoints[2].state.setHealth(.unhealthy, now: 0)
        endpoints[3].state.setHealth(.unhealthy, now: 0)
        plan = SelectionPlan(endpoints: endpoints, config: config, localZone: nil, now: 0)
        #expect(plan.groups.map(Self.ports) == [[5, 6]])
        // Priority 0 recovers: traffic comes back.
        for endpoint in endpoints.prefix(4) { endpoint.state.setHealth(.healthy, now: 0) }
        plan = SelectionPlan(endpoints: endpoints, config: config, localZone: nil, now: 0)
        #expect(plan.groups.map(Self.ports) == [[1, 2, 3, 4]])
    }

    @Test func sharesAreScaledUpWhenNoLevelCanTakeItAll() {
        // 1 of 4 healthy in each level: 35 % + 35 % = 70 %, scaled to 50 % / 50 %.
        let endpoints = Self.endpoints([0, 0, 0, 0, 1, 1, 1, 1].map { EndpointMetadata(priority: $0) })
        for index in [1, 2, 3, 5, 6, 7] { endpoints[index].state.setHealth(.unhealthy, now: 0) }
        let plan = SelectionPlan(endpoints: endpoints, config: LoadBalancerConfig(panicThreshold: 0), localZone: nil, now: 0)
        #expect(plan.groups.map(Self.ports) == [[1], [5]])
        #expect(abs(plan.groups[0].upTo - 0.5) < 1e-9)
    }

    @Test func panicModeUsesEveryEndpointOfTheLevel() {
        let endpoints = Self.endpoints(Array(repeating: EndpointMetadata(), count: 4))
        for endpoint in endpoints.prefix(3) { endpoint.state.setHealth(.unhealthy, now: 0) }
        // 25 % healthy < 50 %: panic, all four used.
        var plan = SelectionPlan(endpoints: endpoints, config: LoadBalancerConfig(), localZone: nil, now: 0)
        #expect(plan.panic)
        #expect(plan.groups.map(Self.ports) == [[1, 2, 3, 4]])
        // A draining endpoint stays out even in panic.
        endpoints[0].state.drain(until: .max, now: 0)
        plan = SelectionPlan(endpoints: endpoints, config: LoadBalancerConfig(), localZone: nil, now: 0)
        #expect(plan.groups.map(Self.ports) == [[2, 3, 4]])
        // Threshold 0: no panic, only the healthy one.
        plan = SelectionPlan(endpoints: endpoints, config: LoadBalancerConfig(panicThreshold: 0), localZone: nil, now: 0)
        #expect(!plan.panic && plan.groups.map(Self.ports) == [[4]])
        // Nothing healthy and no panic: no candidates (503 no_healthy_upstream).
        endpoints[3].state.setHealth(.unhealthy, now: 0)
        plan = SelectionPlan(endpoints: endpoints, config: LoadBalancerConfig(panicThreshold: 0), localZone: nil, now: 0)
        #expect(plan.groups.isEmpty)
        // Exactly at the threshold is not panic: 2 of 4 = 50 %.
        endpoints[1].state.setHealth(.healthy, now: 0)
        endpoints[3].state.setHealth(.healthy, now: 0)
        endpoints[0].state.undrain(now: 0)
        plan = SelectionPlan(endpoints: endpoints, config: LoadBalancerConfig(), localZone: nil, now: 0)
        #expect(!plan.panic && plan.groups.map(Self.ports) == [[2, 4]])
    }

    @Test func theLocalZoneIsPreferredAndSpillsOverByHealth() {
        // Zone a: ports 1–3; zone b: ports 4–6.
        let endpoints = Self.endpoints(["a", "a", "a", "b", "b", "b"].map { EndpointMetadata(zone: $0) })
        let config = LoadBalancerConfig(panicThreshold: 0)
        var plan = SelectionPlan(endpoints: endpoints, config: config, localZone: "a", now: 0)
        #expect(plan.groups.map(Self.ports) == [[1, 2, 3]])
        // One of three local endpoints healthy: 1/3 × 1.4 ≈ 47 % stays, the rest goes to zone b.
        endpoints[0].state.setHealth(.unhealthy, now: 0)
        endpoints[1].state.setHealth(.unhealthy, now: 0)
        plan = SelectionPlan(endpoints: endpoints, config: config, localZone: "a", now: 0)
        #expect(plan.groups.map(Self.ports) == [[3], [4, 5, 6]])
        #expect(abs(plan.groups[0].upTo - 1.4 / 3) < 1e-9)
        // No zone of its own configured: every healthy endpoint, one group.
        plan = SelectionPlan(endpoints: endpoints, config: config, localZone: nil, now: 0)
        #expect(plan.groups.map(Self.ports) == [[3, 4, 5, 6]])
        // A zone with no endpoints here: no preference.
        plan = SelectionPlan(endpoints: endpoints, config: config, localZone: "c", now: 0)
        #expect(plan.groups.map(Self.ports) == [[3, 4, 5, 6]])
    }

    @Test func slowStartRampsANewEndpointsWeight() {
        let endpoints = Self.endpoints([EndpointMetadata(), EndpointMetadata(weight: 2)])
        let fresh = Endpoint(configured: HostPort(host: "127.0.0.1", port: 3), address: try! SocketAddress(ipAddress: "127.0.0.1", port: 3),
                             cluster: Self.cluster, state: EndpointState(now: 100 * Self.second))
        let all = endpoints + [fresh]
        let config = LoadBalancerConfig(slowStart: .init(window: .seconds(10), aggression: 1, minWeightPercent: 10))
        let weightsAt = { (seconds: UInt64) in
            SelectionPlan(endpoints: all, config: config, localZone: nil, now: seconds * Self.second).groups[0].candidates.weights
        }
        #expect(weightsAt(100) == [100, 200, 10], "minWeightPercent at first")
        #expect(weightsAt(105) == [100, 200, 50], "linear with aggression 1")
        #expect(weightsAt(110) == [100, 200, 100], "full weight after the window")
        let plan = SelectionPlan(endpoints: all, config: config, localZone: nil, now: 105 * Self.second)
        #expect(plan.reviewAt == 105 * Self.second + Self.second / 2, "the ramp is stepped 20 times over the window")
        var steep = config
        steep.slowStart?.aggression = 2
        let steepWeights = SelectionPlan(endpoints: all, config: steep, localZone: nil, now: 102_500_000_000).groups[0].candidates.weights
        #expect(steepWeights[2] == 50, "aggression 2: sqrt(0.25) = 50 %")
        // Without slow start the weights are the endpoints' own.
        #expect(SelectionPlan(endpoints: all, config: LoadBalancerConfig(), localZone: nil, now: 0).groups[0].candidates.weights == [1, 2, 1])
    }

    @Test func recoveringOrUndrainingRestartsTheRamp() {
        let state = EndpointState(now: 0)
        state.setHealth(.healthy, now: 5)
        #expect(state.readySince == 0, "a first verdict of healthy is not a recovery")
        state.setHealth(.unhealthy, now: 10)
        state.setHealth(.healthy, now: 20)
        #expect(state.readySince == 20)
        state.drain(until: 100, now: 30)
        #expect(state.isDraining(now: 99) && !state.isDraining(now: 100))
        #expect(state.undrain(now: 40))
        #expect(state.readySince == 40)
        #expect(!state.undrain(now: 50), "not draining: nothing to end")
    }

    @Test func stateChangesThatAlterSelectionBumpTheEpoch() {
        let states = EndpointStates()
        let state = states.state(for: "c|10.0.0.1|80", now: 0)
        #expect(states.state(for: "c|10.0.0.1|80", now: 5) === state, "one state per endpoint")
        let start = states.selectionEpoch.load(ordering: .relaxed)
        state.setHealth(.healthy, now: 1)
        #expect(states.selectionEpoch.load(ordering: .relaxed) == start, "unchecked → healthy changes nothing")
        state.setHealth(.unhealthy, now: 2)
        state.drain(until: 100, now: 3)
        state.drain(until: 200, now: 4)
        #expect(states.selectionEpoch.load(ordering: .relaxed) == start + 2, "extending a drain needs no new plan")
        states.retain(only: [])
        #expect(states.count == 0)
        #expect(states.state(for: "c|10.0.0.1|80", now: 5) !== state, "an endpoint that comes back starts afresh")
    }
}

@Suite("Active health checking")
struct HealthCheckStateMachineTests {
    @Test func thresholdsDecideAfterTheFirstVerdict() {
        var machine = HealthCheckStateMachine(HealthCheckConfig(kind: .tcp, healthyThreshold: 2, unhealthyThreshold: 3))
        #expect(machine.record(passed: true) == .healthy, "the first verdict decides at once")
        #expect(machine.record(passed: false) == nil)
        #expect(machine.record(passed: false) == nil)
        #expect(machine.record(passed: true) == nil, "a pass resets the failure count")
        #expect(machine.record(passed: false) == nil)
        #expect(machine.record(passed: false) == nil)
        #expect(machine.record(passed: false) == .unhealthy, "three in a row")
        #expect(machine.record(passed: true) == nil)
        #expect(machine.record(passed: false) == nil)
        #expect(machine.record(passed: true) == nil)
        #expect(machine.record(passed: true) == .healthy, "two in a row")
        var failing = HealthCheckStateMachine(HealthCheckConfig(kind: .tcp))
        #expect(failing.record(passed: false) == .unhealthy)
    }

    @Test func intervalsFollowHealthAndJitterStaysInItsBound() {
        let config = HealthCheckConfig(kind: .tcp, interval: .seconds(5), unhealthyInterval: .seconds(1), initialJitter: .seconds(2),
                                       jitter: .milliseconds(100))
        var machine = HealthCheckStateMachine(config)
        var random = FastRandom(seed: 9)
        let initial = (0..<200).map { _ in machine.initialDelay(random: &random) }
        #expect(initial.allSatisfy { (0..<2_000_000_000).contains($0) } && Set(initial).count > 100)
        let healthy = (0..<200).map { _ in machine.nextDelay(random: &random) }
        #expect(healthy.allSatisfy { (5_000_000_000..<5_100_000_000).contains($0) })
        _ = machine.record(passed: false)
        #expect((1_000_000_000..<1_100_000_000).contains(machine.nextDelay(random: &random)), "the faster interval while unhealthy")
        var plain = HealthCheckStateMachine(HealthCheckConfig(kind: .tcp, interval: .seconds(3)))
        #expect(plain.initialDelay(random: &random) == 0)
        _ = plain.record(passed: false)
        #expect(plain.nextDelay(random: &random) == 3_000_000_000, "no unhealthy interval: the interval")
    }

    @Test func httpVerdicts() {
        let config = HealthCheckConfig(kind: .http, expectedStatuses: [200...200, 204...299], bodyContains: "ok")
        #expect(HealthCheckVerdict.http(status: 200, body: "all ok", config: config))
        #expect(!HealthCheckVerdict.http(status: 201, body: "all ok", config: config))
        #expect(!HealthCheckVerdict.http(status: 200, body: "degraded", config: config))
        #expect(!HealthCheckVerdict.http(status: 503, body: "ok", config: config))
        #expect(HealthCheckVerdict.http(status: 204, body: nil, config: HealthCheckConfig(kind: .http, expectedStatuses: [204...299])))
    }

    @Test func grpcHealthMessages() {
        #expect(HealthCheckVerdict.grpcRequestFrame(service: "") == [0, 0, 0, 0, 0])
        #expect(HealthCheckVerdict.grpcRequestFrame(service: "ab") == [0, 0, 0, 0, 4, 0x0A, 2, 0x61, 0x62])
        #expect(HealthCheckVerdict.grpcServingStatus(frame: [0, 0, 0, 0, 2, 0x08, 1]) == 1)
        #expect(HealthCheckVerdict.grpcServingStatus(frame: [0, 0, 0, 0, 2, 0x08, 2]) == 2)
        #expect(HealthCheckVerdict.grpcServingStatus(frame: [0, 0, 0, 0, 0]) == 0, "an empty message is UNKNOWN")
        #expect(HealthCheckVerdict.grpcServingStatus(frame: [0, 0, 0, 0, 3, 0x08, 1]) == nil, "truncated")
        #expect(HealthCheckVerdict.grpcServingStatus(frame: [1, 0, 0, 0, 2, 0x08, 1]) == nil, "compressed")
        #expect(HealthCheckVerdict.grpcServingStatus(frame: []) == nil)
    }
}
