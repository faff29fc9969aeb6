import Atomics
import NIOCore
import OutriggerConfig

/// One upstream instance: where to connect, and the key its connection pools are found by.
public final class Endpoint: Sendable, CustomStringConvertible {
    /// As written in config (`svc.local:8080`).
    public let configured: HostPort
    /// The resolved address connections go to.
    public let address: SocketAddress
    /// Identifies the endpoint's pools across config reloads: same cluster, protocol and address → same pools.
    public let poolKey: String
    /// Unique per `Endpoint` object, for fast per-event-loop lookups (an `Int` hashes faster than `poolKey`).
    public let id: Int

    private static let nextID = ManagedAtomic<Int>(0)

    public init(configured: HostPort, address: SocketAddress, cluster: ClusterConfig) {
        self.configured = configured
        self.address = address
        let ip = address.ipAddress ?? configured.host
        // Pool settings are part of the key: a reload that changes them starts fresh pools, and the old
        // ones close as their connections go idle.
        let pool = cluster.pool
        self.poolKey = "\(cluster.name)|\(cluster.upstreamProtocol.rawValue)|\(ip)|\(configured.port)|"
            + "\(pool.maxConnectionsPerEndpoint)|\(pool.maxPendingRequests)|\(pool.idleTimeout)|\(cluster.connectTimeout)"
        self.id = Self.nextID.wrappingIncrementThenLoad(ordering: .relaxed)
    }

    public var description: String {
        guard let ip = address.ipAddress, ip != configured.host else { return configured.description }
        return "\(configured) (\(ip))"
    }
}

/// The endpoints of a cluster at one moment; replaced whole when DNS or discovery changes them.
public final class EndpointSet: AtomicReference, Sendable {
    public let endpoints: [Endpoint]

    public init(_ endpoints: [Endpoint]) {
        self.endpoints = endpoints
    }
}

/// A cluster as the request path sees it: its settings, its current endpoints and its stats.
public final class ClusterRuntime: Sendable {
    public let config: ClusterConfig
    public let stats: ClusterStats
    private let endpointSet: ManagedAtomic<EndpointSet>

    public var name: String { config.name }

    public init(config: ClusterConfig, endpoints: [Endpoint], stats: ClusterStats) {
        self.config = config
        self.stats = stats
        self.endpointSet = ManagedAtomic(EndpointSet(endpoints))
    }

    public var endpoints: [Endpoint] {
        endpointSet.load(ordering: .acquiring).endpoints
    }

    /// Swaps in a new endpoint list (DNS re-resolution). Requests already sent keep their endpoint.
    public func replaceEndpoints(_ endpoints: [Endpoint]) {
        endpointSet.store(EndpointSet(endpoints), ordering: .releasing)
    }
}

/// Endpoint selection. The seam where the other balancers plug in; each event loop keeps its own state,
/// so a pick never takes a lock.
public protocol EndpointPicker {
    /// The endpoint for the next request, or nil when there is none (→ 503 `no_healthy_upstream`).
    mutating func pick(from endpoints: [Endpoint]) -> Endpoint?
}

/// Strict rotation over the current endpoints.
public struct RoundRobinPicker: EndpointPicker {
    private var next: Int

    /// `start` staggers event loops so they do not all begin with the first endpoint.
    public init(start: Int = 0) {
        self.next = start
    }

    public mutating func pick(from endpoints: [Endpoint]) -> Endpoint? {
        guard !endpoints.isEmpty else { return nil }
        let index = next % endpoints.count
        next = index + 1
        return endpoints[index]
    }
}
