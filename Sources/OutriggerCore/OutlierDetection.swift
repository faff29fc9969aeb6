import OutriggerConfig

/// How one try went, for passive health (outlier detection).
public enum AttemptResult: Sendable, Equatable {
    case success
    /// A 5xx answer.
    case serverError(status: Int)
    /// No answer: connect failure, reset, timeout (counts as a gateway failure).
    case localFailure
}

/// Outlier detection: consecutive failures eject an endpoint for base × times ejected (capped), never more
/// than `maxEjectionPercent` of the cluster at once (rounded down; 0 never ejects). Ejected endpoints are
/// left out of selection (the panic threshold still applies) and come back when their time is up.
public enum OutlierDetection {
    /// Counts `result` against the endpoint; true when a failure streak reached a configured threshold.
    public static func record(_ result: AttemptResult, on state: EndpointState, config: OutlierDetectionConfig) -> Bool {
        if config.judgesIntervals {
            state.intervalRequests.wrappingIncrement(ordering: .relaxed)
            if result != .success { state.intervalFailures.wrappingIncrement(ordering: .relaxed) }
        }
        switch result {
        case .success:
            // Most answers: a load, and a store only when a streak ends.
            if state.consecutive5xx.load(ordering: .relaxed) != 0 { state.consecutive5xx.store(0, ordering: .relaxed) }
            if state.consecutiveGatewayFailures.load(ordering: .relaxed) != 0 { state.consecutiveGatewayFailures.store(0, ordering: .relaxed) }
            return false
        case .serverError(let status):
            let fives = state.consecutive5xx.wrappingIncrementThenLoad(ordering: .relaxed)
            var gateway = 0
            if RetryPolicy.Condition.isGatewayError(status) {
                gateway = state.consecutiveGatewayFailures.wrappingIncrementThenLoad(ordering: .relaxed)
            } else {
                state.consecutiveGatewayFailures.store(0, ordering: .relaxed)
            }
            return reached(fives, config.consecutive5xx) || reached(gateway, config.consecutiveGatewayFailure)
        case .localFailure:
            let fives = state.consecutive5xx.wrappingIncrementThenLoad(ordering: .relaxed)
            let gateway = state.consecutiveGatewayFailures.wrappingIncrementThenLoad(ordering: .relaxed)
            return reached(fives, config.consecutive5xx) || reached(gateway, config.consecutiveGatewayFailure)
        }
    }

    private static func reached(_ count: Int, _ threshold: Int) -> Bool { threshold > 0 && count >= threshold }

    /// Failure-percentage outliers among per-endpoint (requests, failures) over an interval: the indices of
    /// those with enough volume failing at least the threshold, when enough endpoints had the volume.
    public static func failurePercentageOutliers(_ samples: [(requests: Int, failures: Int)], config: OutlierDetectionConfig) -> [Int] {
        guard config.failurePercentageThreshold > 0 else { return [] }
        let qualified = samples.indices.filter { samples[$0].requests >= config.failurePercentageRequestVolume }
        guard qualified.count >= config.failurePercentageMinimumHosts else { return [] }
        return qualified.filter { samples[$0].failures * 100 >= config.failurePercentageThreshold * samples[$0].requests }
    }

    /// Success-rate outliers (Envoy's rule): among the endpoints with enough volume, when there are enough of
    /// them, those whose success rate is below the mean by more than `successRateStdevFactor` / 1000 standard
    /// deviations.
    public static func successRateOutliers(_ samples: [(requests: Int, failures: Int)], config: OutlierDetectionConfig) -> [Int] {
        guard config.successRateStdevFactor > 0 else { return [] }
        let qualified = samples.indices.filter { samples[$0].requests >= config.successRateRequestVolume }
        guard qualified.count >= config.successRateMinimumHosts, !qualified.isEmpty else { return [] }
        let rates = qualified.map { 100 * Double(samples[$0].requests - samples[$0].failures) / Double(samples[$0].requests) }
        let mean = rates.reduce(0, +) / Double(rates.count)
        let variance = rates.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(rates.count)
        let threshold = mean - variance.squareRoot() * Double(config.successRateStdevFactor) / 1000
        return zip(qualified, rates).filter { $0.1 < threshold }.map(\.0)
    }

    /// The interval's counts of `endpoints`, read and reset, then the failure-percentage and success-rate
    /// outliers ejected as far as the max percentage allows (worst success rate first); returns how many were
    /// ejected.
    @discardableResult
    public static func sweep(_ endpoints: [Endpoint], config: OutlierDetectionConfig, states: EndpointStates, now: UInt64) -> Int {
        let samples = endpoints.map { endpoint in
            (requests: endpoint.state.intervalRequests.exchange(0, ordering: .relaxed),
             failures: endpoint.state.intervalFailures.exchange(0, ordering: .relaxed))
        }
        let flagged = Set(failurePercentageOutliers(samples, config: config)).union(successRateOutliers(samples, config: config))
        guard !flagged.isEmpty else { return 0 }
        let outliers = flagged.sorted { samples[$0].failures * samples[$1].requests > samples[$1].failures * samples[$0].requests }
        return states.withEjectionLock {
            outliers.filter { eject(endpoints[$0], among: endpoints, config: config, now: now) != nil }.count
        }
    }

    /// Ejects `endpoint` if the cluster's maximum allows one more; returns when the ejection ends, or nil.
    /// Call under `EndpointStates.withEjectionLock`.
    public static func eject(_ endpoint: Endpoint, among endpoints: [Endpoint], config: OutlierDetectionConfig, now: UInt64) -> UInt64? {
        guard !endpoint.state.isEjected(now: now) else { return nil }
        let allowed = endpoints.count * config.maxEjectionPercent / 100
        let ejected = endpoints.filter { $0.state.isEjected(now: now) }.count
        guard ejected < allowed else { return nil }
        let times = endpoint.state.timesEjected.load(ordering: .relaxed) + 1
        let duration = min(config.baseEjectionTime.nanoseconds * Int64(times), max(config.maxEjectionTime, config.baseEjectionTime).nanoseconds)
        let until = now + UInt64(duration)
        endpoint.state.eject(until: until)
        return until
    }
}
