import NIOCore
import OutriggerCore

/// Endpoints draining themselves: an answer carrying `x-outrigger-drain: true` (on any response, health
/// checks included) keeps new requests away from its endpoint for the cluster's `endpointDrainTimeout`,
/// while requests already sent finish. A passing health check without the header, or an admin call, ends it.
enum EndpointDrain {
    static let header = "x-outrigger-drain"

    static func start(_ endpoint: Endpoint, in cluster: ClusterRuntime, until: UInt64? = nil) {
        start(endpoint, stats: cluster.stats, timeout: cluster.config.endpointDrainTimeout, until: until)
    }

    static func start(_ endpoint: Endpoint, stats: ClusterStats, timeout: Duration, until: UInt64? = nil) {
        let now = NIODeadline.now().uptimeNanoseconds
        let end = until ?? now + UInt64(timeout.nanoseconds)
        // Every draining response extends the drain; only the first one counts as a new drain.
        if endpoint.state.drain(until: max(end, endpoint.state.drainingUntil), now: now) {
            stats.endpointDrains.increment()
        }
    }
}
