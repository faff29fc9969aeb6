import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// Keeps exactly one checker per endpoint of every cluster that has health checks: started for endpoints
/// that appear, stopped for those that leave, restarted when the cluster's check settings change.
final class HealthCheckSupervisor: Sendable {
    /// A checker per endpoint, with what it was started with (a change restarts it).
    private let checkers = NIOLockedValueBox<[String: (config: HealthCheckConfig, tls: UpstreamTLSConfig?, checker: HealthChecker)]>([:])
    private let group: any EventLoopGroup
    private let tlsContexts: UpstreamTLSContexts
    private let logger: Logger

    init(group: any EventLoopGroup, tlsContexts: UpstreamTLSContexts, logger: Logger) {
        self.group = group
        self.tlsContexts = tlsContexts
        self.logger = logger
    }

    /// Brings the checkers in line with `snapshot`'s clusters and their current endpoints.
    func reconcile(_ snapshot: RuntimeSnapshot) {
        var wanted: [String: (HealthCheckConfig, Endpoint, ClusterRuntime)] = [:]
        for cluster in snapshot.clusters.values {
            guard let config = cluster.config.healthCheck else { continue }
            for endpoint in cluster.endpoints { wanted[endpoint.stateKey] = (config, endpoint, cluster) }
        }
        var started: [HealthChecker] = []
        var stopped: [(HealthChecker, forget: Bool)] = []
        checkers.withLockedValue { running in
            for (key, entry) in running where wanted[key]?.0 != entry.config || wanted[key]?.2.config.tls != entry.tls {
                // Gone (its state is forgotten with it) or checked differently now (the new checker decides).
                stopped.append((entry.checker, forget: wanted[key] == nil))
                running[key] = nil
            }
            for (key, (config, endpoint, cluster)) in wanted where running[key] == nil {
                let checker = HealthChecker(endpoint: endpoint, cluster: cluster, config: config, eventLoop: group.next(),
                                            tlsContexts: tlsContexts, logger: logger)
                running[key] = (config, cluster.config.tls, checker)
                started.append(checker)
            }
        }
        for (checker, forget) in stopped { checker.stop(forgetVerdict: forget) }
        for checker in started { checker.start() }
    }

    func stopAll() {
        let all = checkers.withLockedValue { running in
            defer { running.removeAll() }
            return running.values.map(\.checker)
        }
        for checker in all { checker.stop(forgetVerdict: false) }
    }
}
