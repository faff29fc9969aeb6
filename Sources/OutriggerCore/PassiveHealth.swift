/// Passive health: what each try's result does to its endpoint — its circuit breaker's verdict and its outlier
/// detection streak — counted in the cluster's stats.
extension ClusterRuntime {
    /// Records a try's result: to `endpoint`'s breaker when the try was admitted by it and owes a verdict, and to its
    /// failure streak (`countsForOutliers`: the try still counts at the endpoint), which may eject it within the
    /// cluster's maximum ejection percentage. `clock` (uptime ns) is read only when needed: with a breaker, or when
    /// a streak reached its threshold (rarely).
    public func recordTry(_ result: AttemptResult, at endpoint: Endpoint, owesBreakerVerdict: Bool, countsForOutliers: Bool,
                          random: inout FastRandom, clock: () -> UInt64) {
        if result != .success { endpoint.state.failures.increment() }
        if owesBreakerVerdict, let breakers {
            let now = clock()
            let transition = endpoint.state.withBreaker(breakers) { breaker in
                breaker.record(success: result == .success, now: now, random: &random)
            }
            switch transition {
            case .open?: stats.breakersOpened.increment()
            case .closed?: stats.breakersClosed.increment()
            default: break
            }
        }
        guard countsForOutliers, let outlierDetection, OutlierDetection.record(result, on: endpoint.state, config: outlierDetection)
        else { return }
        let now = clock()
        guard !endpoint.state.isEjected(now: now) else { return }
        let ejected = endpointStates.withEjectionLock {
            OutlierDetection.eject(endpoint, among: endpoints, config: outlierDetection, now: now)
        }
        if ejected != nil { stats.outlierEjections.increment() } else { stats.outlierEjectionsPrevented.increment() }
    }

    /// A try admitted by `endpoint`'s breaker ended without a verdict: its probe slot is free again.
    public func abandonBreakerProbe(at endpoint: Endpoint) {
        guard let breakers else { return }
        endpoint.state.withBreaker(breakers) { $0.abandon() }
    }

    /// Why the cluster offered no endpoint: their breakers are open, or none is healthy.
    public func noEndpointReason(now: UInt64) -> LocalReplyReason {
        guard breakers != nil else { return .noHealthyUpstream }
        return endpoints.contains { $0.state.breakerOpenUntil > now } ? .breakerOpen : .noHealthyUpstream
    }
}
