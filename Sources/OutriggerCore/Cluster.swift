import Atomics
import NIOConcurrencyHelpers
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
    /// Its share of the cluster's traffic relative to the others' (≥ 1).
    public let weight: Int
    public let zone: String?
    /// 0 is the highest.
    public let priority: Int
    /// Health, drain and load, shared by every event loop and kept while the endpoint stays in the cluster.
    public let state: EndpointState
    /// Finds `state` again after a DNS change or reload: cluster, address and port.
    public let stateKey: String
    /// `IP:PORT`, as access logs name it.
    public let addressText: String

    private static let nextID = ManagedAtomic<Int>(0)

    public init(configured: HostPort, address: SocketAddress, cluster: ClusterConfig, metadata: EndpointMetadata = .default,
                state: EndpointState? = nil) {
        self.configured = configured
        self.address = address
        self.weight = max(metadata.weight, 1)
        self.zone = metadata.zone
        self.priority = metadata.priority
        let ip = address.ipAddress ?? configured.host
        self.addressText = ip.contains(":") ? "[\(ip)]:\(configured.port)" : "\(ip):\(configured.port)"
        self.stateKey = EndpointStates.key(cluster: cluster.name, address: ip, port: configured.port)
        self.state = state ?? EndpointState(now: NIODeadline.now().uptimeNanoseconds)
        // Pool and TLS settings are part of the key: a reload that changes them starts fresh pools, and the
        // old ones close as their connections go idle.
        let pool = cluster.pool
        self.poolKey = "\(cluster.name)|\(cluster.upstreamProtocol.rawValue)|\(ip)|\(configured.port)|"
            + "\(pool.maxConnectionsPerEndpoint)|\(pool.maxPendingRequests)|\(pool.idleTimeout)|\(cluster.connectTimeout)"
            + (cluster.tls.map { "|\($0)" } ?? "")
        self.id = Self.nextID.wrappingIncrementThenLoad(ordering: .relaxed)
    }

    public var description: String {
        guard let ip = address.ipAddress, ip != configured.host else { return configured.description }
        return "\(configured) (\(ip))"
    }
}

/// The endpoints of a cluster at one moment, replaced whole when DNS or discovery changes them; also a
/// balancer's candidates, with the weights it uses (slow start lowers a new endpoint's).
public final class EndpointSet: AtomicReference, Sendable {
    public let endpoints: [Endpoint]
    /// Parallel to `endpoints`.
    public let weights: [Int]

    public init(_ endpoints: [Endpoint], weights: [Int]? = nil) {
        self.endpoints = endpoints
        self.weights = weights ?? endpoints.map(\.weight)
    }
}

/// A cluster as the request path sees it: its settings, its current endpoints and its stats.
public final class ClusterRuntime: Sendable {
    public let config: ClusterConfig
    public let stats: ClusterStats
    private let endpointSet: ManagedAtomic<EndpointSet>

    public var name: String { config.name }
    /// The sidecar's own zone (from its config), for locality-aware selection.
    public let localZone: String?

    /// The last good contents of the cluster's endpoints file (empty without one).
    private let fileEntriesBox: NIOLockedValueBox<[EndpointsFile.Entry]>

    /// The process's endpoint states; their epoch tells balancers when to look at them again.
    public let endpointStates: EndpointStates
    /// Settings every request reads, copied out of `config` once (reading them through the struct can
    /// copy it, with a retain per reference it holds).
    public let hashPolicy: LoadBalancerConfig.HashPolicy?
    public let limits: ClusterLimits
    public let breakers: BreakerConfig?
    public let outlierDetection: OutlierDetectionConfig?
    public let upstreamProtocol: ClusterConfig.UpstreamProtocol
    public let timeout: Duration
    public let streamIdleTimeout: Duration
    /// This cluster object's number, never given to another in the process (an object's address is: a cluster
    /// freed by a reload can leave its address to the next one).
    public let serial: Int

    private static let nextSerial = ManagedAtomic<Int>(0)

    public init(config: ClusterConfig, endpoints: [Endpoint], stats: ClusterStats, fileEntries: [EndpointsFile.Entry] = [],
                localZone: String? = nil, endpointStates: EndpointStates = EndpointStates()) {
        self.config = config
        self.hashPolicy = config.loadBalancer.hashPolicy
        self.limits = config.limits
        self.breakers = config.breakers
        self.outlierDetection = config.outlierDetection
        self.upstreamProtocol = config.upstreamProtocol
        self.timeout = config.timeout
        self.streamIdleTimeout = config.streamIdleTimeout
        self.endpointStates = endpointStates
        self.localZone = localZone
        self.stats = stats
        self.endpointSet = ManagedAtomic(EndpointSet(endpoints))
        self.fileEntriesBox = NIOLockedValueBox(fileEntries)
        self.serial = Self.nextSerial.loadThenWrappingIncrement(ordering: .relaxed)
    }

    public var fileEntries: [EndpointsFile.Entry] {
        get { fileEntriesBox.withLockedValue { $0 } }
        set { fileEntriesBox.withLockedValue { $0 = newValue } }
    }

    /// The configured endpoints with the endpoints file's, as the next resolution should see them.
    public var configWithFileEndpoints: ClusterConfig {
        config.adding(fileEntries)
    }

    public var endpoints: [Endpoint] {
        endpointSet.load(ordering: .acquiring).endpoints
    }

    /// The current endpoints as one object: its identity changes whenever they do.
    public var currentEndpointSet: EndpointSet {
        endpointSet.load(ordering: .acquiring)
    }

    /// Swaps in a new endpoint list (DNS re-resolution). Requests already sent keep their endpoint.
    public func replaceEndpoints(_ endpoints: [Endpoint]) {
        endpointSet.store(EndpointSet(endpoints), ordering: .releasing)
    }
}
