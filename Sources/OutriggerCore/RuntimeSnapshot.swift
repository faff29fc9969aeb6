import NIOCore
import OutriggerConfig

/// An immutable, compiled config: route tables per listener, clusters with resolved endpoints.
/// Swapped atomically on reload; a request keeps the snapshot it started with.
public final class RuntimeSnapshot: Sendable {
    public let config: SidecarConfig
    /// Increases by one with every applied config.
    public let version: Int
    public let listeners: [String: ListenerRuntime]
    public let clusters: [String: ClusterRuntime]
    /// Endpoints whose names did not resolve, with why. Their clusters start without them (503
    /// `no_healthy_upstream` if nothing else is left) and resolution is retried on the refresh interval.
    public let unresolved: [(endpoint: HostPort, cluster: String, error: String)]
    /// Endpoint health and drain, kept across snapshots.
    public let endpointStates: EndpointStates

    /// - Parameters:
    ///   - resolve: turns a configured endpoint into addresses; static IPs need no lookup.
    ///   - endpointsFile: reads a cluster's endpoints file (what it cannot read counts as empty).
    public init(
        config: SidecarConfig,
        version: Int,
        stats: ProxyStats,
        resolve: (HostPort) throws -> [SocketAddress],
        endpointsFile: (String) -> [EndpointsFile.Entry] = { _ in [] },
        endpointStates: EndpointStates = EndpointStates()
    ) throws {
        self.config = config
        self.version = version
        self.endpointStates = endpointStates
        var clusters: [String: ClusterRuntime] = [:]
        var unresolved: [(endpoint: HostPort, cluster: String, error: String)] = []
        for cluster in config.clusters {
            let fileEntries = cluster.endpointsFile.map(endpointsFile) ?? []
            let endpoints = Self.endpoints(of: cluster.adding(fileEntries), resolve: resolve, states: endpointStates) { endpoint, error in
                unresolved.append((endpoint, cluster.name, "\(error)"))
            }
            clusters[cluster.name] = ClusterRuntime(config: cluster, endpoints: endpoints, stats: stats.cluster(cluster.name),
                                                    fileEntries: fileEntries, localZone: config.zone,
                                                    endpointStates: endpointStates)
        }
        self.clusters = clusters
        self.unresolved = unresolved
        var listeners: [String: ListenerRuntime] = [:]
        for listener in config.listeners {
            listeners[listener.name] = ListenerRuntime(
                config: listener,
                routes: try RouteTable(listener.virtualHosts, clusters: clusters, stats: { stats.route(listener: listener.name, name: $0) }),
                stats: stats.listener(listener.name)
            )
        }
        self.listeners = listeners
    }

    /// Every endpoint state key in use by this snapshot's clusters.
    public var endpointStateKeys: Set<String> {
        Set(clusters.values.flatMap { $0.endpoints.map(\.stateKey) })
    }

    /// Every address each configured endpoint resolves to, deduplicated, each with its state from `states`;
    /// endpoints that do not resolve are left out and reported to `failed`.
    public static func endpoints(
        of cluster: ClusterConfig,
        resolve: (HostPort) throws -> [SocketAddress],
        states: EndpointStates,
        failed: (HostPort, any Error) -> Void
    ) -> [Endpoint] {
        let now = NIODeadline.now().uptimeNanoseconds
        var seen: Set<String> = []
        var endpoints: [Endpoint] = []
        for configured in cluster.endpoints {
            let addresses: [SocketAddress]
            do {
                addresses = try resolve(configured)
            } catch {
                failed(configured, error)
                continue
            }
            for address in addresses {
                let key = EndpointStates.key(cluster: cluster.name, address: address.ipAddress ?? configured.host, port: configured.port)
                guard seen.insert(key).inserted else { continue }
                endpoints.append(Endpoint(configured: configured, address: address, cluster: cluster,
                                          metadata: cluster.endpointMetadata[configured] ?? .default,
                                          state: states.state(for: key, now: now)))
            }
        }
        return endpoints
    }
}

/// A listener's part of a snapshot.
public final class ListenerRuntime: Sendable {
    public let config: ListenerConfig
    public let routes: RouteTable
    public let stats: ListenerStats

    init(config: ListenerConfig, routes: RouteTable, stats: ListenerStats) {
        self.config = config
        self.routes = routes
        self.stats = stats
    }
}
