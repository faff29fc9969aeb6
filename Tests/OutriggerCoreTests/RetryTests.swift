import NIOHTTP1
import OutriggerConfig
@testable import OutriggerCore
import Testing

@Suite("Retries: conditions, safety, backoff, budget")
struct RetryTests {
    static let policy = RetryPolicy(attempts: 3, retryOn: [.fiveXX, .reset, .connectFailure, .unavailable])

    static func decide(_ outcome: AttemptOutcome, policy: RetryPolicy = policy, tries: Int = 1, idempotent: Bool = true,
                       replayable: Bool = true, budget: Bool = true) -> RetryDecision {
        var random = FastRandom(seed: 1)
        return RetryDecision.decide(policy: policy, outcome: outcome, triesSoFar: tries, idempotent: idempotent, replayable: replayable,
                                    random: &random) { budget ? nil : "budget" }
    }

    static func isRetry(_ decision: RetryDecision) -> Bool {
        if case .retry = decision { return true }
        return false
    }

    @Test func conditionsMatchOutcomes() {
        #expect(Self.isRetry(Self.decide(.response(status: 503, grpcStatus: nil, retryAfterSeconds: nil))))
        #expect(Self.decide(.response(status: 404, grpcStatus: nil, retryAfterSeconds: nil)) == .stop(reason: nil))
        #expect(Self.isRetry(Self.decide(.reset)))
        #expect(Self.isRetry(Self.decide(.connectFailure)))
        #expect(Self.isRetry(Self.decide(.response(status: 200, grpcStatus: 14, retryAfterSeconds: nil))), "gRPC UNAVAILABLE")
        #expect(Self.decide(.response(status: 200, grpcStatus: 8, retryAfterSeconds: nil)) == .stop(reason: nil), "not asked for")
        let gateway = RetryPolicy(attempts: 2, retryOn: [.gatewayError])
        #expect(Self.isRetry(Self.decide(.response(status: 502, grpcStatus: nil, retryAfterSeconds: nil), policy: gateway)))
        #expect(Self.decide(.response(status: 500, grpcStatus: nil, retryAfterSeconds: nil), policy: gateway) == .stop(reason: nil))
        let codes = RetryPolicy(attempts: 2, retryOn: [.retriableStatusCodes], retriableStatusCodes: [409])
        #expect(Self.isRetry(Self.decide(.response(status: 409, grpcStatus: nil, retryAfterSeconds: nil), policy: codes)))
    }

    @Test func attemptsSafetyReplayAndBudgetStopRetries() {
        let failure = AttemptOutcome.response(status: 500, grpcStatus: nil, retryAfterSeconds: nil)
        #expect(Self.isRetry(Self.decide(failure, tries: 2)))
        #expect(Self.decide(failure, tries: 3) == .stop(reason: "attempts"))
        #expect(Self.decide(failure, idempotent: false) == .stop(reason: "not_idempotent"), "a POST that reached the upstream is not resent")
        #expect(Self.isRetry(Self.decide(.connectFailure, idempotent: false)), "one that never left is")
        #expect(Self.isRetry(Self.decide(.response(status: 200, grpcStatus: 14, retryAfterSeconds: nil), idempotent: false)),
                "a gRPC status the route lists is its opt-in for gRPC calls (POSTs)")
        var optIn = Self.policy
        optIn.retryNonIdempotent = true
        #expect(Self.isRetry(Self.decide(failure, policy: optIn, idempotent: false)))
        #expect(Self.decide(failure, replayable: false) == .stop(reason: "body_too_large"))
        #expect(Self.decide(failure, budget: false) == .stop(reason: "budget"))
    }

    @Test func idempotency() {
        #expect(RetryDecision.isIdempotent(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        #expect(RetryDecision.isIdempotent(HTTPRequestHead(version: .http1_1, method: .PUT, uri: "/")))
        #expect(!RetryDecision.isIdempotent(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/")))
        #expect(RetryDecision.isIdempotent(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/", headers: ["Idempotency-Key": "a1"])))
    }

    @Test func backoffIsFullyJitteredAndCapped() {
        var random = FastRandom(seed: 5)
        let base = Duration.milliseconds(25), cap = Duration.milliseconds(250)
        for retry in 1...8 {
            let ceiling = min(250_000_000, 25_000_000 << Int64(retry - 1))
            let delays = (0..<500).map { _ in RetryDecision.backoff(retry: retry, base: base, max: cap, random: &random) }
            #expect(delays.allSatisfy { $0 >= 0 && $0 < ceiling }, "retry \(retry)")
            #expect(Double(delays.max()!) > Double(ceiling) * 0.9 && Double(delays.min()!) < Double(ceiling) * 0.1, "spread over the whole range")
        }
    }

    @Test func retryAfterIsHonouredUpToItsCap() {
        var policy = Self.policy
        policy.retryAfterMax = .seconds(2)
        let soon = Self.decide(.response(status: 503, grpcStatus: nil, retryAfterSeconds: 1), policy: policy)
        #expect(soon == .retry(after: 1_000_000_000, reason: "5xx"))
        #expect(Self.decide(.response(status: 503, grpcStatus: nil, retryAfterSeconds: 5), policy: policy) == .stop(reason: "retry_after"))
        // Past Int64 once in nanoseconds: past the cap, not a trap.
        for seconds in [10_000_000_000, Int.max] {
            #expect(Self.decide(.response(status: 503, grpcStatus: nil, retryAfterSeconds: seconds), policy: policy) == .stop(reason: "retry_after"))
        }
    }

    @Test func budgetAllowsAShareOfRequestsPlusAFloor() {
        let second: UInt64 = 1_000_000_000
        var budget = RetryBudget(RetryBudgetConfig(percent: 20, minRetriesPerSecond: 1, window: .seconds(10)))
        var now = 100 * second
        // The floor alone: 1/s over a 10 s window = 10 retries before any request.
        let floorOnly = (0..<20).filter { _ in budget.withdraw(now: now) }.count
        #expect(floorOnly == 10)
        // 100 requests: 20 % more.
        for _ in 0..<100 { budget.recordRequest(now: now) }
        #expect((0..<40).filter { _ in budget.withdraw(now: now) }.count == 20)
        // Eleven seconds later the window has forgotten it all.
        now += 11 * second
        #expect((0..<40).filter { _ in budget.withdraw(now: now) }.count == 10)
        // Shared by two loops, each gets half the floor.
        var half = RetryBudget(RetryBudgetConfig(percent: 0, minRetriesPerSecond: 1, window: .seconds(10)), loops: 2)
        #expect((0..<20).filter { _ in half.withdraw(now: now) }.count == 5)
    }

    @Test func budgetCapsAmplificationAtFullFailure() {
        // Every request fails and asks for a retry: sent = requests + retries stays near 1.2× (plus the floor).
        var budget = RetryBudget(RetryBudgetConfig(percent: 20, minRetriesPerSecond: 10, window: .seconds(10)))
        var sent = 0
        let requests = 10_000
        for index in 0..<requests {
            let now = UInt64(index) * 10_000_000  // 100 requests per second for 100 s
            budget.recordRequest(now: now)
            sent += 1
            var tries = 1
            while tries < 3, budget.withdraw(now: now) {
                sent += 1
                tries += 1
            }
        }
        let amplification = Double(sent) / Double(requests)
        #expect(amplification < 1.2 + 10.0 / 100 + 0.01, "\(amplification)")
        #expect(amplification > 1.19)
    }
}

@Suite("Config: retries")
struct RetryConfigTests {
    static func route(_ retries: String) throws(ConfigErrors) -> RouteConfig {
        try SidecarConfig.decode(yaml: """
        listeners: [{name: in, address: 127.0.0.1:0, routes: [{cluster: c, retries: \(retries)}]}]
        clusters: [{name: c, endpoints: [127.0.0.1:1]}]
        """, file: "r.yaml").listeners[0].virtualHosts[0].routes[0]
    }

    static func issues(_ retries: String) -> [ConfigIssue] {
        do {
            _ = try route(retries)
            return []
        } catch {
            return error.issues
        }
    }

    @Test func decodesAPolicy() throws {
        let policy = try Self.route("{attempts: 3, retryOn: '5xx,reset', perTryTimeout: 500ms, backoff: {base: 10ms, max: 100ms}}").retries
        #expect(policy.attempts == 3 && policy.retryOn == [.fiveXX, .reset] && policy.perTryTimeout == .milliseconds(500))
        #expect(policy.backoffBase == .milliseconds(10) && policy.backoffMax == .milliseconds(100))
        #expect(!policy.hedgeOnPerTryTimeout)
        #expect(try Self.route("{perTryTimeout: 100ms, hedgeOnPerTryTimeout: true}").retries.hedgeOnPerTryTimeout)
        let listed = try Self.route("{retryOn: [gateway-error, unavailable], retriableStatusCodes: [409]}").retries
        #expect(listed.retryOn == [.gatewayError, .unavailable, .retriableStatusCodes] && listed.retriableStatusCodes == [409])
        #expect(listed.attempts == 2, "default: one retry")
        #expect(try Self.route("{}").retries.retryOn == [.fiveXX, .reset, .connectFailure, .refusedStream])
    }

    @Test(arguments: [
        ("{attempts: 0}", "listeners[0].routes[0].retries.attempts", "expected an integer in 1...10, found 0"),
        ("{retryOn: '5xx,resett'}", "listeners[0].routes[0].retries.retryOn", "unknown retryOn condition 'resett'; did you mean 'reset'?"),
        ("{perTryTimeout: 0s}", "listeners[0].routes[0].retries.perTryTimeout", "expected a duration greater than zero"),
        ("{backoff: {base: 1s, max: 100ms}}", "listeners[0].routes[0].retries.backoff.max", "expected a max no shorter than the base"),
        ("{retryOn: [retriable-status-codes]}", "listeners[0].routes[0].retries.retryOn", "retriable-status-codes needs a retriableStatusCodes list"),
        ("{retriableStatusCodes: [700]}", "listeners[0].routes[0].retries.retriableStatusCodes[0]", "expected an integer in 100...599"),
        ("{hedgeOnPerTryTimeout: true}", "listeners[0].routes[0].retries.hedgeOnPerTryTimeout", "hedgeOnPerTryTimeout needs a perTryTimeout"),
    ])
    func impossiblePoliciesAreErrors(yaml: String, path: String, message: String) {
        let issues = Self.issues(yaml)
        #expect(issues.map(\.keyPath).contains(path), "\(issues)")
        #expect(issues.contains { $0.message.hasPrefix(message) }, "\(issues.map(\.message))")
    }
}

@Suite("Config: cluster resilience")
struct ClusterResilienceConfigTests {
    static func decode(cluster extra: String, route: String = "") throws(ConfigErrors) -> SidecarConfig {
        try SidecarConfig.decode(yaml: """
        listeners: [{name: in, address: 127.0.0.1:0, routes: [{cluster: c\(route)}]}]
        clusters:
          - name: c
            endpoints: [127.0.0.1:1]
        \(extra.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
        """, file: "c.yaml")
    }

    @Test func decodesEveryBlock() throws {
        let config = try Self.decode(cluster: """
        outlierDetection: {consecutive5xx: 3, maxEjectionPercent: 30, interval: 5s, failurePercentageThreshold: 80,
                           successRateStdevFactor: 1500, successRateMinimumHosts: 3, successRateRequestVolume: 20}
        breakers: {consecutiveFailures: 4, openTime: 2s, maxOpenTime: 20s, halfOpenRequests: 2}
        limits: {maxRequests: 100, maxActiveRetries: 5, maxConnections: 50, maxPendingRequests: 10}
        retryBudget: {percent: 10, minRetriesPerSecond: 1, window: 5s}
        """, route: ", fallback: {status: 200, body: cached}")
        let cluster = config.clusters[0]
        let outliers = try #require(cluster.outlierDetection)
        #expect(outliers.consecutive5xx == 3 && outliers.maxEjectionPercent == 30 && outliers.interval == .seconds(5))
        #expect(outliers.failurePercentageThreshold == 80)
        #expect(outliers.successRateStdevFactor == 1500 && outliers.successRateMinimumHosts == 3 && outliers.successRateRequestVolume == 20)
        #expect(cluster.breakers?.consecutiveFailures == 4 && cluster.breakers?.halfOpenRequests == 2)
        #expect(cluster.limits == ClusterLimits(maxRequests: 100, maxActiveRetries: 5, maxConnections: 50, maxPendingRequests: 10))
        #expect(cluster.retryBudget.percent == 10 && cluster.retryBudget.window == .seconds(5))
        #expect(config.listeners[0].virtualHosts[0].routes[0].fallback == .response(status: 200, headers: [], body: "cached"))
    }

    @Test(arguments: [
        ("outlierDetection: {maxEjectionPercent: 101}", "", "clusters[0].outlierDetection.maxEjectionPercent", "expected an integer in 0...100"),
        ("outlierDetection: {successRateStdevFactor: -1}", "", "clusters[0].outlierDetection.successRateStdevFactor", "expected an integer in 0...100000"),
        ("outlierDetection: {baseEjectionTime: 0s}", "", "clusters[0].outlierDetection.baseEjectionTime", "expected a duration greater than zero"),
        ("breakers: {openTime: -1s}", "", "clusters[0].breakers.openTime", "expected a duration"),
        ("limits: {maxRequests: 0}", "", "clusters[0].limits.maxRequests", "expected an integer in 1..."),
        ("limits: {maxConnections: 0}", "", "clusters[0].limits.maxConnections", "expected an integer in 1..."),
        ("limits: {maxPendingRequests: -1}", "", "clusters[0].limits.maxPendingRequests", "expected an integer in 0..."),
        ("retryBudget: {percent: -5}", "", "clusters[0].retryBudget.percent", "expected an integer in 0...1000"),
        ("", ", fallback: {cluster: nowhere}", "listeners[0].routes[0].fallback.cluster", "unknown cluster 'nowhere'"),
    ])
    func impossibleValuesAreErrorsWithTheirKeyPathAndLine(cluster: String, route: String, path: String, message: String) {
        do {
            _ = try Self.decode(cluster: cluster, route: route)
            Issue.record("decoded")
        } catch {
            let issue = error.issues.first { $0.keyPath == path }
            #expect(issue != nil, "\(error.issues)")
            #expect(issue?.message.hasPrefix(message) == true, "\(error.issues.map(\.message))")
            #expect(issue?.line == (route.isEmpty ? 5 : 1), "\(error.issues)")
        }
    }
}

@Suite("Success-rate ejection")
struct SuccessRateTests {
    @Test func anEndpointFarBelowTheMeanIsAnOutlier() {
        let config = OutlierDetectionConfig(successRateMinimumHosts: 5, successRateRequestVolume: 100)
        // Rates 100, 99, 100, 98, 40: mean 87.4, stdev 23.7, threshold 87.4 − 1.9 × 23.7 = 42.3.
        let samples = [(requests: 100, failures: 0), (requests: 100, failures: 1), (requests: 100, failures: 0),
                       (requests: 100, failures: 2), (requests: 100, failures: 60)]
        #expect(OutlierDetection.successRateOutliers(samples, config: config) == [4])
        #expect(OutlierDetection.successRateOutliers(samples + [(requests: 99, failures: 99)], config: config) == [4], "the last lacks volume")
        #expect(OutlierDetection.successRateOutliers(Array(samples.prefix(4)) + [(requests: 50, failures: 50)], config: config) == [],
                "too few hosts with volume")
        let even = Array(repeating: (requests: 100, failures: 30), count: 5)
        #expect(OutlierDetection.successRateOutliers(even, config: config) == [], "all alike: nobody is an outlier")
        var off = config
        off.successRateStdevFactor = 0
        #expect(OutlierDetection.successRateOutliers(samples, config: off) == [])
        var strict = config
        strict.successRateStdevFactor = 1000  // threshold 87.4 − 23.7 = 63.7
        #expect(OutlierDetection.successRateOutliers(samples, config: strict) == [4])
    }
}

@Suite("Outlier detection")
struct OutlierDetectionTests {
    static let second: UInt64 = 1_000_000_000

    @Test func streaksEjectAndEjectionsGrowAndEnd() {
        let endpoints = SelectionPlanTests.endpoints(Array(repeating: EndpointMetadata(), count: 4))
        let config = OutlierDetectionConfig(consecutive5xx: 3, consecutiveGatewayFailure: 0, baseEjectionTime: .seconds(10),
                                            maxEjectionTime: .seconds(25), maxEjectionPercent: 50)
        let state = endpoints[0].state
        #expect(!OutlierDetection.record(.serverError(status: 500), on: state, config: config))
        #expect(!OutlierDetection.record(.localFailure, on: state, config: config))
        #expect(!OutlierDetection.record(.success, on: state, config: config), "a success ends the streak")
        #expect(!OutlierDetection.record(.serverError(status: 500), on: state, config: config))
        #expect(!OutlierDetection.record(.serverError(status: 503), on: state, config: config))
        #expect(OutlierDetection.record(.localFailure, on: state, config: config), "three in a row")
        #expect(OutlierDetection.eject(endpoints[0], among: endpoints, config: config, now: 100 * Self.second) == 110 * Self.second)
        #expect(!state.isEligible(now: 109 * Self.second) && state.isEligible(now: 110 * Self.second))
        let plan = SelectionPlan(endpoints: endpoints, config: LoadBalancerConfig(), localZone: nil, now: 100 * Self.second)
        #expect(!plan.groups[0].candidates.endpoints.contains { $0 === endpoints[0] })
        #expect(plan.reviewAt == 110 * Self.second, "back by itself when the ejection ends")
        // Ejected again: base × 2; a third time: capped at 25 s.
        #expect(OutlierDetection.eject(endpoints[0], among: endpoints, config: config, now: 200 * Self.second) == 220 * Self.second)
        #expect(OutlierDetection.eject(endpoints[0], among: endpoints, config: config, now: 300 * Self.second) == 325 * Self.second)
        #expect(OutlierDetection.eject(endpoints[0], among: endpoints, config: config, now: 301 * Self.second) == nil, "already out")
    }

    @Test func gatewayFailuresCountOnlyGatewayStatuses() {
        let state = EndpointState(now: 0)
        let config = OutlierDetectionConfig(consecutive5xx: 0, consecutiveGatewayFailure: 2)
        #expect(!OutlierDetection.record(.serverError(status: 502), on: state, config: config))
        #expect(!OutlierDetection.record(.serverError(status: 500), on: state, config: config), "a 500 is no gateway failure")
        #expect(!OutlierDetection.record(.serverError(status: 504), on: state, config: config))
        #expect(OutlierDetection.record(.localFailure, on: state, config: config))
    }

    @Test(arguments: [(0, 10, 0), (10, 10, 1), (34, 3, 1), (50, 4, 2), (100, 3, 3), (10, 9, 0)])
    func maxEjectionPercentIsHonouredExactly(percent: Int, endpoints count: Int, ejectable: Int) {
        let endpoints = SelectionPlanTests.endpoints(Array(repeating: EndpointMetadata(), count: count))
        let config = OutlierDetectionConfig(maxEjectionPercent: percent)
        let ejected = endpoints.filter { OutlierDetection.eject($0, among: endpoints, config: config, now: Self.second) != nil }.count
        #expect(ejected == ejectable, "\(percent) % of \(count): \(ejected) ejected")
    }
}

@Suite("Per-request override headers")
struct RequestOverridesTests {
    @Test func parsesAndApplies() {
        let headers: HTTPHeaders = ["X-Outrigger-Timeout-Ms": "1500", "x-outrigger-per-try-timeout-ms": " 200 ",
                                    "x-outrigger-retry-on": "5xx, reset", "x-outrigger-max-retries": "2"]
        func anyPresent(_ headers: HTTPHeaders) -> Bool {
            RequestHeadFacts(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: headers)).hasOverrideFields
        }
        #expect(anyPresent(headers))
        #expect(!anyPresent(["x-outrigge": "1", "x-request-id": "a", "y-outrigger-timeout-ms": "1"]))
        #expect(anyPresent(["accept": "*/*", "X-OUTRIGGER-": ""]), "the prefix alone, in any case")
        let overrides = RequestOverrides(headers)
        #expect(overrides.timeout == .milliseconds(1500) && overrides.perTryTimeout == .milliseconds(200))
        #expect(overrides.retryOn == [.fiveXX, .reset] && overrides.maxRetries == 2 && overrides.malformed == 0)
        let policy = overrides.applied(to: .none)
        #expect(policy.attempts == 3 && policy.retryOn == [.fiveXX, .reset] && policy.perTryTimeout == .milliseconds(200))
        let conditionsOnly = RequestOverrides(["x-outrigger-retry-on": "gateway-error"]).applied(to: .none)
        #expect(conditionsOnly.attempts == 2, "asking for conditions asks for a retry")
        let none = RequestOverrides(["x-outrigger-max-retries": "0"]).applied(to: RetryPolicy(attempts: 3, retryOn: [.fiveXX]))
        #expect(none.attempts == 1, "max retries 0 turns the route's retries off")
    }

    @Test func malformedValuesAreIgnoredAndCounted() {
        let overrides = RequestOverrides(["x-outrigger-timeout-ms": "soon", "x-outrigger-per-try-timeout-ms": "0",
                                          "x-outrigger-retry-on": "5xx,sometimes", "x-outrigger-max-retries": "99"])
        #expect(overrides == { var expected = RequestOverrides(); expected.malformed = 4; return expected }())
        #expect(overrides.applied(to: .none) == .none)
    }
}

@Suite("Downstream timeouts")
struct DownstreamTimeoutsTests {
    static let ms: UInt64 = 1_000_000

    @Test func slowHeadersGet408AtTheirDeadline() {
        var timeouts = DownstreamTimeouts(requestHeadersTimeout: .milliseconds(100), idleTimeout: .seconds(1), now: 0)
        #expect(timeouts.check(now: 0) == .checkAgain(at: 25 * Self.ms), "idle: looked at again within ¼ of the headers timeout")
        timeouts.bytesArrived(now: 10 * Self.ms)
        timeouts.bytesArrived(now: 50 * Self.ms)
        #expect(timeouts.check(now: 60 * Self.ms) == .checkAgain(at: 110 * Self.ms), "from the first byte, not the last")
        #expect(timeouts.check(now: 110 * Self.ms) == .requestTimeout)
    }

    @Test func aRequestInFlightIsNotTimedHereAndIdleCountsFromItsEnd() {
        var timeouts = DownstreamTimeouts(requestHeadersTimeout: .milliseconds(100), idleTimeout: .seconds(1), now: 0)
        timeouts.bytesArrived(now: 10 * Self.ms)
        timeouts.headReceived()
        timeouts.bytesArrived(now: 20 * Self.ms)  // its body
        #expect(timeouts.check(now: 5000 * Self.ms) == .checkAgain(at: 5100 * Self.ms), "a slow upstream is the route timeout's business")
        timeouts.responseEnded(now: 6000 * Self.ms)
        #expect(timeouts.check(now: 6999 * Self.ms) == .checkAgain(at: 7000 * Self.ms))
        #expect(timeouts.check(now: 6100 * Self.ms) == .checkAgain(at: 6125 * Self.ms))
        #expect(timeouts.check(now: 7000 * Self.ms) == .closeIdle)
        // Pipelined: two heads, one response: still busy.
        timeouts.headReceived()
        timeouts.headReceived()
        timeouts.responseEnded(now: 8000 * Self.ms)
        #expect(timeouts.check(now: 20000 * Self.ms) != .closeIdle)
    }
}

@Suite("Circuit breakers")
struct CircuitBreakerTests {
    static let second: UInt64 = 1_000_000_000

    @Test func consecutiveFailuresOpenThenHalfOpenProbesCloseOrReopen() {
        var random = FastRandom(seed: 3)
        var breaker = CircuitBreaker(BreakerConfig(consecutiveFailures: 3, failureRatePercent: 0, openTime: .seconds(10), maxOpenTime: .seconds(30),
                                                   halfOpenRequests: 1))
        let now = 100 * Self.second
        let admitted1 = breaker.admit(now: now)
        #expect(admitted1)
        #expect(breaker.record(success: false, now: now, random: &random) == nil)
        #expect(breaker.record(success: false, now: now, random: &random) == nil)
        guard case .open(let until)? = breaker.record(success: false, now: now, random: &random) else {
            Issue.record("expected open")
            return
        }
        #expect(until >= now + 10 * Self.second && until < now + 11 * Self.second, "open time plus at most 10 % jitter")
        let admitted2 = breaker.admit(now: until - 1)
        #expect(!admitted2)
        let admitted3 = breaker.admit(now: until)
        #expect(admitted3, "half-open: one probe")
        let admitted4 = breaker.admit(now: until)
        #expect(!admitted4, "only one at a time")
        guard case .open(let again)? = breaker.record(success: false, now: until, random: &random) else {
            Issue.record("a failed probe opens it again")
            return
        }
        #expect(again - until >= 20 * Self.second && again - until < 22 * Self.second, "twice as long")
        let admitted5 = breaker.admit(now: again)
        #expect(admitted5)
        breaker.abandon()
        let admitted6 = breaker.admit(now: again)
        #expect(admitted6, "an abandoned probe frees its slot")
        #expect(breaker.record(success: true, now: again, random: &random) == .closed)
        let both = (breaker.admit(now: again), breaker.admit(now: again))
        #expect(both.0 && both.1, "closed: everything goes")
    }

    @Test func aFailureRateOverTheWindowOpensOnceTheVolumeIsThere() {
        var random = FastRandom(seed: 3)
        var breaker = CircuitBreaker(BreakerConfig(consecutiveFailures: 0, failureRatePercent: 50, minimumRequests: 10, window: .seconds(10)))
        let now = 100 * Self.second
        // Alternating: 50 % failures, but no streak.
        var opened = false
        for index in 0..<9 { opened = opened || breaker.record(success: index % 2 == 1, now: now, random: &random) != nil }
        #expect(!opened, "under the minimum volume")
        #expect(breaker.record(success: false, now: now, random: &random) != nil, "10 requests, 5 failed: 50 %")
        // Old failures leave the window.
        var fresh = CircuitBreaker(BreakerConfig(consecutiveFailures: 0, failureRatePercent: 50, minimumRequests: 4, window: .seconds(10)))
        for _ in 0..<3 { _ = fresh.record(success: false, now: now, random: &random) }
        for _ in 0..<4 { _ = fresh.record(success: true, now: now + 20 * Self.second, random: &random) }
        #expect(fresh.record(success: false, now: now + 20 * Self.second, random: &random) == nil, "1 of 5 in the window")
    }
}

@Suite("Failure-percentage ejection")
struct FailurePercentageTests {
    @Test func outliersNeedVolumeAndEnoughHosts() {
        let config = OutlierDetectionConfig(failurePercentageThreshold: 50, failurePercentageMinimumHosts: 3, failurePercentageRequestVolume: 10)
        let samples = [(requests: 20, failures: 12), (requests: 20, failures: 1), (requests: 20, failures: 0), (requests: 5, failures: 5)]
        #expect(OutlierDetection.failurePercentageOutliers(samples, config: config) == [0], "the last lacks volume")
        #expect(OutlierDetection.failurePercentageOutliers(Array(samples.prefix(2)), config: config) == [], "too few hosts with volume")
        var off = config
        off.failurePercentageThreshold = 0
        #expect(OutlierDetection.failurePercentageOutliers(samples, config: off) == [])
    }
}
