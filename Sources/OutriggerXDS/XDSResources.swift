import Foundation
import OutriggerConfig
import SwiftProtobuf

/// The four resource types of state-of-the-world ADS, in the order a push applies them: clusters and their
/// endpoints before the listeners and routes that use them (make-before-break).
public enum XDSType: String, Sendable, Hashable, CaseIterable, Comparable {
    case cluster = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    case endpoints = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    case listener = "type.googleapis.com/envoy.config.listener.v3.Listener"
    case route = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

    /// Envoy's name for the resource type, as in logs and `/config_dump`.
    public var shortName: String {
        switch self {
        case .cluster: "Cluster"
        case .endpoints: "ClusterLoadAssignment"
        case .listener: "Listener"
        case .route: "RouteConfiguration"
        }
    }

    /// Clusters, then endpoints, then listeners, then routes.
    public var pushOrder: Int {
        switch self {
        case .cluster: 0
        case .endpoints: 1
        case .listener: 2
        case .route: 3
        }
    }

    public static func < (lhs: XDSType, rhs: XDSType) -> Bool { lhs.pushOrder < rhs.pushOrder }
}

/// One named resource, serialized once and shared by every node that gets it.
public struct XDSResource: Sendable, Hashable {
    public let type: XDSType
    public let name: String
    public let body: Google_Protobuf_Any
    /// The body's bytes hashed (`FNV1a`) once: a version over many resources mixes these, not
    /// every byte again for every sidecar.
    public let digest: UInt64

    public init(type: XDSType, name: String, body: Google_Protobuf_Any) {
        self.type = type
        self.name = name
        self.body = body
        digest = FNV1a.hash(body.value)
    }
}

/// Names of the extensions and filters in the resources, as Envoy spells them.
public enum XDSNames {
    public static let httpConnectionManager = "envoy.filters.network.http_connection_manager"
    public static let router = "envoy.filters.http.router"
    /// A cluster's `transport_socket` for upstream TLS.
    public static let tlsTransportSocket = "envoy.transport_sockets.tls"
    /// The `typed_filter_metadata` key of the `outrigger.v1` options on listeners, routes and clusters.
    public static let options = "outrigger.v1"
}

/// A config that cannot be said in xDS (a local file the sidecar would have to read, say).
public struct XDSEncodingError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// Our config in xDS v3: the one place our value types become Envoy's messages. Each listener becomes a
/// Listener whose HttpConnectionManager takes its routes from a RouteConfiguration of the same name (RDS
/// over ADS); each cluster an EDS Cluster and a ClusterLoadAssignment. What Envoy's types cannot say rides
/// in `outrigger.v1` options (`XDSNames.options`), which Envoy ignores.
public enum XDSEncoder {
    /// Every resource for `listeners` and `clusters`.
    public static func resources(listeners: [ListenerConfig], clusters: [ClusterConfig]) throws -> [XDSResource] {
        var resources: [XDSResource] = []
        for cluster in clusters {
            resources.append(XDSResource(type: .cluster, name: cluster.name, body: try XDSEncoder.pack(try self.cluster(cluster))))
            resources.append(XDSResource(type: .endpoints, name: cluster.name, body: try XDSEncoder.pack(loadAssignment(cluster))))
        }
        for listener in listeners {
            resources.append(XDSResource(type: .listener, name: listener.name, body: try XDSEncoder.pack(try self.listener(listener))))
            resources.append(XDSResource(type: .route, name: listener.name, body: try XDSEncoder.pack(routeConfiguration(listener))))
        }
        return resources
    }

    // MARK: Listeners

    public static func listener(_ config: ListenerConfig) throws -> Envoy_Config_Listener_V3_Listener {
        var manager = try connectionManager(config.name)
        manager.maxRequestHeadersKb = Google_Protobuf_UInt32Value(UInt32((config.maxRequestHeadersBytes + 1023) / 1024))
        manager.requestHeadersTimeout = protoDuration(config.requestHeadersTimeout)
        if config.tracing.mode == .participate {
            // Envoy's reading: a tracing block turns tracing on; random_sampling is the share sampled at a root.
            var tracing = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager.Tracing()
            tracing.randomSampling.value = config.tracing.sampleRatio * 100
            manager.tracing = tracing
        }

        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = XDSNames.httpConnectionManager
        filter.typedConfig = try XDSEncoder.pack(manager)
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.filters = [filter]

        var options = Outrigger_V1_ListenerOptions()
        options.addVia = config.addVia
        options.trustOverrideHeaders = config.trustOverrideHeaders
        if let bytes = config.maxRequestBodyBytes { options.maxRequestBodyBytes = Google_Protobuf_UInt64Value(UInt64(bytes)) }
        options.idleTimeout = protoDuration(config.idleTimeout)
        options.handshakeTimeout = protoDuration(config.handshakeTimeout)
        if let limit = config.maxConnections { options.maxConnections = Google_Protobuf_UInt32Value(UInt32(limit)) }
        options.maxRequestHeadersBytes = UInt32(config.maxRequestHeadersBytes)
        if let log = config.accessLog {
            options.accessLog.path = log.path
            options.accessLog.format = log.format.rawValue
        }
        if let tls = config.tls {
            options.tlsCertificatePath = tls.certificate
            options.tlsPrivateKeyPath = tls.privateKey
            options.tlsMinVersion = tls.minVersion.rawValue
            options.tlsCipherSuites = tls.cipherSuites
            if let clients = tls.clientCertificates {
                options.tlsClientCaPath = clients.caFile
                options.tlsClientSubjectAltNames = clients.subjectAltNames
            }
        }
        options.sendTimeout = protoDuration(config.sendTimeout)
        options.rapidReset.maxResetsPerAddress = UInt32(config.rapidReset.maxResetsPerAddress)
        options.rapidReset.window = protoDuration(config.rapidReset.window)
        options.rapidReset.refuseFor = protoDuration(config.rapidReset.refuseFor)
        options.overloadPriority = config.overloadPriority.rawValue

        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = config.name
        listener.statPrefix = config.name
        listener.address = address(config.address)
        listener.trafficDirection = config.direction == .inbound ? .inbound : .outbound
        listener.filterChains = [chain]
        listener.metadata = try metadata(options)
        return listener
    }

    /// A listener for a proxyless gRPC client (`xds:///NAME`): no socket, only the routes of RouteConfiguration `NAME`.
    public static func apiListener(_ name: String) throws -> Envoy_Config_Listener_V3_Listener {
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = name
        listener.apiListener.apiListener = try XDSEncoder.pack(try connectionManager(name))
        return listener
    }

    static func connectionManager(_ name: String) throws -> Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager {
        var manager = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager()
        manager.statPrefix = name
        manager.rds.routeConfigName = name
        manager.rds.configSource.ads = Envoy_Config_Core_V3_AggregatedConfigSource()
        manager.rds.configSource.resourceApiVersion = .v3
        var router = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter()
        router.name = XDSNames.router
        router.typedConfig = try XDSEncoder.pack(Envoy_Extensions_Filters_Http_Router_V3_Router())
        manager.httpFilters = [router]
        return manager
    }

    public static func routeConfiguration(_ config: ListenerConfig) throws -> Envoy_Config_Route_V3_RouteConfiguration {
        try routeConfiguration(name: config.name, config.virtualHosts)
    }

    public static func routeConfiguration(name: String, _ hosts: [VirtualHostConfig]) throws -> Envoy_Config_Route_V3_RouteConfiguration {
        var routes = Envoy_Config_Route_V3_RouteConfiguration()
        routes.name = name
        routes.virtualHosts = try hosts.map { host in
            var virtualHost = Envoy_Config_Route_V3_VirtualHost()
            virtualHost.name = host.name
            virtualHost.domains = host.domains
            virtualHost.routes = try host.routes.map(route)
            return virtualHost
        }
        return routes
    }

    static func route(_ config: RouteConfig) throws -> Envoy_Config_Route_V3_Route {
        var route = Envoy_Config_Route_V3_Route()
        if let name = config.name { route.name = name }
        switch config.match.path {
        case .prefix(let prefix): route.match.prefix = prefix
        case .exact(let path): route.match.path = path
        case .regex(let regex):
            var matcher = Envoy_Type_Matcher_V3_RegexMatcher()
            matcher.regex = regex
            route.match.safeRegex = matcher
        }
        route.match.headers = config.match.headers.map(headerMatcher)
        if !config.match.methods.isEmpty { route.match.headers.append(methodMatcher(config.match.methods)) }

        var action = Envoy_Config_Route_V3_RouteAction()
        switch config.destination {
        case .cluster(let name): action.cluster = name
        case .weightedClusters(let clusters):
            var weighted = Envoy_Config_Route_V3_WeightedCluster()
            weighted.clusters = clusters.map { choice in
                var weight = Envoy_Config_Route_V3_WeightedCluster.ClusterWeight()
                weight.name = choice.cluster
                weight.weight = Google_Protobuf_UInt32Value(UInt32(choice.weight))
                return weight
            }
            action.weightedClusters = weighted
        }
        if let prefix = config.prefixRewrite { action.prefixRewrite = prefix }
        if let host = config.hostRewrite { action.hostRewriteLiteral = host }
        if let timeout = config.timeout { action.timeout = protoDuration(timeout) }
        var options = Outrigger_V1_RouteOptions()
        if config.retries != .none {
            let retries = config.retries
            var policy = Envoy_Config_Route_V3_RetryPolicy()
            policy.retryOn = retries.retryOn.sorted().map(\.rawValue).joined(separator: ",")
            policy.numRetries = Google_Protobuf_UInt32Value(UInt32(retries.attempts - 1))
            if let perTry = retries.perTryTimeout { policy.perTryTimeout = protoDuration(perTry) }
            policy.retriableStatusCodes = retries.retriableStatusCodes.sorted().map { UInt32($0) }
            policy.retryBackOff.baseInterval = protoDuration(retries.backoffBase)
            policy.retryBackOff.maxInterval = protoDuration(retries.backoffMax)
            action.retryPolicy = policy
            if retries.hedgeOnPerTryTimeout { action.hedgePolicy.hedgeOnPerTryTimeout = true }
            options.retryAfterMax = protoDuration(retries.retryAfterMax)
            options.replayBufferBytes = Google_Protobuf_UInt64Value(UInt64(retries.replayBufferBytes))
            options.retryNonIdempotent = retries.retryNonIdempotent
        }
        switch config.fallback {
        case .cluster(let name): options.fallbackCluster = name
        case .response(let status, let headers, let body):
            var response = Outrigger_V1_RouteOptions.FallbackResponse()
            response.status = UInt32(status)
            response.headers = headers.map { header in
                var value = Outrigger_V1_Header()
                value.name = header.name
                value.value = header.value
                return value
            }
            response.body = body
            options.fallbackResponse = response
        case nil: break
        }
        route.route = action
        (route.requestHeadersToAdd, route.requestHeadersToRemove) = headerOptions(config.requestHeaders)
        (route.responseHeadersToAdd, route.responseHeadersToRemove) = headerOptions(config.responseHeaders)
        if options != Outrigger_V1_RouteOptions() { route.metadata = try metadata(options) }
        return route
    }

    static func headerMatcher(_ config: HeaderMatchConfig) -> Envoy_Config_Route_V3_HeaderMatcher {
        var matcher = Envoy_Config_Route_V3_HeaderMatcher()
        matcher.name = config.name
        switch config.condition {
        case .present(let present):
            matcher.presentMatch = true
            matcher.invertMatch = !present
        case .exact(let value):
            var string = Envoy_Type_Matcher_V3_StringMatcher()
            string.exact = value
            matcher.stringMatch = string
        case .prefix(let value):
            var string = Envoy_Type_Matcher_V3_StringMatcher()
            string.prefix = value
            matcher.stringMatch = string
        }
        return matcher
    }

    /// Envoy matches methods as the `:method` pseudo-header: one exactly, several with an anchored alternation.
    static func methodMatcher(_ methods: [String]) -> Envoy_Config_Route_V3_HeaderMatcher {
        var matcher = Envoy_Config_Route_V3_HeaderMatcher()
        matcher.name = ":method"
        var string = Envoy_Type_Matcher_V3_StringMatcher()
        if methods.count == 1 {
            string.exact = methods[0]
        } else {
            var regex = Envoy_Type_Matcher_V3_RegexMatcher()
            regex.regex = "^(\(methods.joined(separator: "|")))$"
            string.safeRegex = regex
        }
        matcher.stringMatch = string
        return matcher
    }

    /// `add` appends, `set` overwrites or adds (Envoy's append actions), `remove` lists names.
    static func headerOptions(_ mutations: HeaderMutations) -> ([Envoy_Config_Core_V3_HeaderValueOption], [String]) {
        func option(_ header: HeaderValue, _ action: Envoy_Config_Core_V3_HeaderValueOption.HeaderAppendAction) -> Envoy_Config_Core_V3_HeaderValueOption {
            var option = Envoy_Config_Core_V3_HeaderValueOption()
            option.header.key = header.name
            option.header.value = header.value
            option.appendAction = action
            return option
        }
        let options = mutations.add.map { option($0, .appendIfExistsOrAdd) } + mutations.set.map { option($0, .overwriteIfExistsOrAdd) }
        return (options, mutations.remove)
    }

    // MARK: Clusters

    /// A cluster's `tls` as Envoy's UpstreamTlsContext: the files are paths on the sidecar's machine. Without a
    /// CA file the system's roots verify (`system_root_certs`); `insecureSkipVerify` is no validation context
    /// at all (Envoy's meaning of its absence).
    static func upstreamTLS(_ tls: UpstreamTLSConfig) -> Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext {
        var context = Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext()
        if let sni = tls.sni { context.sni = sni }
        var common = Envoy_Extensions_TransportSockets_Tls_V3_CommonTlsContext()
        common.tlsParams.tlsMinimumProtocolVersion = tls.minVersion == .tls13 ? .tlsv13 : .tlsv12
        if let certificate = tls.certificate, let key = tls.privateKey {
            var pair = Envoy_Extensions_TransportSockets_Tls_V3_TlsCertificate()
            pair.certificateChain.filename = certificate
            pair.privateKey.filename = key
            common.tlsCertificates = [pair]
        }
        if !tls.insecureSkipVerify {
            var validation = Envoy_Extensions_TransportSockets_Tls_V3_CertificateValidationContext()
            if let ca = tls.caFile {
                validation.trustedCa.filename = ca
            } else {
                validation.systemRootCerts = .init()
            }
            validation.matchTypedSubjectAltNames = tls.subjectAltNames.map { name in
                var matcher = Envoy_Extensions_TransportSockets_Tls_V3_SubjectAltNameMatcher()
                matcher.sanType = name.contains(":") ? .uri : .dns
                matcher.matcher.exact = name
                return matcher
            }
            common.validationContext = validation
        }
        context.commonTlsContext = common
        return context
    }

    public static func cluster(_ config: ClusterConfig) throws -> Envoy_Config_Cluster_V3_Cluster {
        if let file = config.endpointsFile {
            throw XDSEncodingError(description: "cluster '\(config.name)': endpointsFile '\(file)' is a file on this machine; a cluster sent over xDS lists its endpoints")
        }
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = config.name
        cluster.type = .eds
        cluster.edsClusterConfig.edsConfig.ads = Envoy_Config_Core_V3_AggregatedConfigSource()
        cluster.edsClusterConfig.edsConfig.resourceApiVersion = .v3
        cluster.connectTimeout = protoDuration(config.connectTimeout)
        cluster.dnsRefreshRate = protoDuration(config.dnsRefreshInterval)
        if config.upstreamProtocol == .http2 { cluster.http2ProtocolOptions = Envoy_Config_Core_V3_Http2ProtocolOptions() }
        if let tls = config.tls {
            cluster.transportSocket.name = XDSNames.tlsTransportSocket
            cluster.transportSocket.typedConfig = try XDSEncoder.pack(upstreamTLS(tls))
        }

        var options = Outrigger_V1_ClusterOptions()
        let balancer = config.loadBalancer
        switch balancer.policy {
        case .roundRobin: cluster.lbPolicy = .roundRobin
        case .random: cluster.lbPolicy = .random
        case .leastRequest: cluster.lbPolicy = .leastRequest
        case .peakEWMA:
            // Envoy has no peak EWMA; least request is its nearest policy.
            cluster.lbPolicy = .leastRequest
            options.peakEwma = true
            options.ewmaDecay = protoDuration(balancer.decay)
            options.ewmaDefaultRtt = protoDuration(balancer.defaultRTT)
        case .ringHash: cluster.lbPolicy = .ringHash
        case .maglev:
            cluster.lbPolicy = .maglev
            cluster.maglevLbConfig.tableSize = Google_Protobuf_UInt64Value(UInt64(balancer.maglevTableSize))
        }
        var panic = Envoy_Type_V3_Percent()
        panic.value = Double(balancer.panicThreshold)
        cluster.commonLbConfig.healthyPanicThreshold = panic
        if let slowStart = balancer.slowStart {
            var start = Envoy_Config_Cluster_V3_Cluster.SlowStartConfig()
            start.slowStartWindow = protoDuration(slowStart.window)
            start.minWeightPercent.value = Double(slowStart.minWeightPercent)
            if balancer.policy == .leastRequest || balancer.policy == .peakEWMA {
                cluster.leastRequestLbConfig.slowStartConfig = start
            } else {
                cluster.roundRobinLbConfig.slowStartConfig = start
            }
            options.slowStartAggression = slowStart.aggression
        }
        switch balancer.hashPolicy {
        case .header(let name): options.hashPolicy.header = name
        case .cookie(let name, let ttl):
            options.hashPolicy.cookie = name
            if let ttl { options.hashPolicy.cookieTtl = protoDuration(ttl) }
        case .clientAddress: options.hashPolicy.clientAddress = true
        case nil: break
        }

        if let check = config.healthCheck {
            var health = Envoy_Config_Core_V3_HealthCheck()
            health.timeout = protoDuration(check.timeout)
            health.interval = protoDuration(check.interval)
            if let unhealthy = check.unhealthyInterval { health.unhealthyInterval = protoDuration(unhealthy) }
            health.initialJitter = protoDuration(check.initialJitter)
            health.intervalJitter = protoDuration(check.jitter)
            health.healthyThreshold = Google_Protobuf_UInt32Value(UInt32(check.healthyThreshold))
            health.unhealthyThreshold = Google_Protobuf_UInt32Value(UInt32(check.unhealthyThreshold))
            switch check.kind {
            case .http:
                var http = Envoy_Config_Core_V3_HealthCheck.HttpHealthCheck()
                http.path = check.path
                if let host = check.host { http.host = host }
                // Envoy's ranges are half-open.
                http.expectedStatuses = check.expectedStatuses.map { range in
                    var statuses = Envoy_Type_V3_Int64Range()
                    statuses.start = Int64(range.lowerBound)
                    statuses.end = Int64(range.upperBound + 1)
                    return statuses
                }
                health.httpHealthCheck = http
                options.healthCheck.method = check.method
                if let text = check.bodyContains { options.healthCheck.bodyContains = text }
            case .tcp:
                health.tcpHealthCheck = Envoy_Config_Core_V3_HealthCheck.TcpHealthCheck()
            case .grpc:
                var grpc = Envoy_Config_Core_V3_HealthCheck.GrpcHealthCheck()
                grpc.serviceName = check.service
                if let host = check.host { grpc.authority = host }
                health.grpcHealthCheck = grpc
            }
            cluster.healthChecks = [health]
        }

        var thresholds = Envoy_Config_Cluster_V3_CircuitBreakers.Thresholds()
        thresholds.maxConnections = Google_Protobuf_UInt32Value(UInt32(clamping: config.limits.maxConnections))
        thresholds.maxPendingRequests = Google_Protobuf_UInt32Value(UInt32(clamping: config.limits.maxPendingRequests))
        thresholds.maxRequests = Google_Protobuf_UInt32Value(UInt32(clamping: config.limits.maxRequests))
        thresholds.maxRetries = Google_Protobuf_UInt32Value(UInt32(clamping: config.limits.maxActiveRetries))
        cluster.circuitBreakers.thresholds = [thresholds]

        if let outliers = config.outlierDetection {
            var detection = Envoy_Config_Cluster_V3_OutlierDetection()
            detection.consecutive5Xx = Google_Protobuf_UInt32Value(UInt32(outliers.consecutive5xx))
            detection.consecutiveGatewayFailure = Google_Protobuf_UInt32Value(UInt32(outliers.consecutiveGatewayFailure))
            detection.interval = protoDuration(outliers.interval)
            detection.baseEjectionTime = protoDuration(outliers.baseEjectionTime)
            detection.maxEjectionTime = protoDuration(outliers.maxEjectionTime)
            detection.maxEjectionPercent = Google_Protobuf_UInt32Value(UInt32(outliers.maxEjectionPercent))
            detection.failurePercentageThreshold = Google_Protobuf_UInt32Value(UInt32(outliers.failurePercentageThreshold))
            detection.failurePercentageMinimumHosts = Google_Protobuf_UInt32Value(UInt32(outliers.failurePercentageMinimumHosts))
            detection.failurePercentageRequestVolume = Google_Protobuf_UInt32Value(UInt32(outliers.failurePercentageRequestVolume))
            detection.successRateStdevFactor = Google_Protobuf_UInt32Value(UInt32(outliers.successRateStdevFactor))
            detection.successRateMinimumHosts = Google_Protobuf_UInt32Value(UInt32(outliers.successRateMinimumHosts))
            detection.successRateRequestVolume = Google_Protobuf_UInt32Value(UInt32(outliers.successRateRequestVolume))
            cluster.outlierDetection = detection
        }

        options.pool.maxConnectionsPerEndpoint = UInt32(config.pool.maxConnectionsPerEndpoint)
        options.pool.maxPendingRequests = UInt32(config.pool.maxPendingRequests)
        options.pool.idleTimeout = protoDuration(config.pool.idleTimeout)
        options.retryBudget.percent = UInt32(config.retryBudget.percent)
        options.retryBudget.minRetriesPerSecond = UInt32(config.retryBudget.minRetriesPerSecond)
        options.retryBudget.window = protoDuration(config.retryBudget.window)
        if let breakers = config.breakers {
            options.breakers.consecutiveFailures = UInt32(breakers.consecutiveFailures)
            options.breakers.failureRatePercent = UInt32(breakers.failureRatePercent)
            options.breakers.minimumRequests = UInt32(breakers.minimumRequests)
            options.breakers.window = protoDuration(breakers.window)
            options.breakers.openTime = protoDuration(breakers.openTime)
            options.breakers.maxOpenTime = protoDuration(breakers.maxOpenTime)
            options.breakers.halfOpenRequests = UInt32(breakers.halfOpenRequests)
        }
        options.timeout = protoDuration(config.timeout)
        options.streamIdleTimeout = protoDuration(config.streamIdleTimeout)
        options.endpointDrainTimeout = protoDuration(config.endpointDrainTimeout)
        cluster.metadata = try metadata(options)
        return cluster
    }

    /// Endpoints grouped by (zone, priority), as Envoy's localities are, in the cluster's order.
    public static func loadAssignment(_ config: ClusterConfig) -> Envoy_Config_Endpoint_V3_ClusterLoadAssignment {
        var assignment = Envoy_Config_Endpoint_V3_ClusterLoadAssignment()
        assignment.clusterName = config.name
        var groups: [Envoy_Config_Endpoint_V3_LocalityLbEndpoints] = []
        for endpoint in config.endpoints {
            let metadata = config.endpointMetadata[endpoint] ?? .default
            var entry = Envoy_Config_Endpoint_V3_LbEndpoint()
            entry.endpoint.address = address(endpoint)
            entry.loadBalancingWeight = Google_Protobuf_UInt32Value(UInt32(metadata.weight))
            let zone = metadata.zone ?? ""
            if let index = groups.firstIndex(where: { $0.locality.zone == zone && $0.priority == UInt32(metadata.priority) }) {
                groups[index].lbEndpoints.append(entry)
            } else {
                var group = Envoy_Config_Endpoint_V3_LocalityLbEndpoints()
                // Always present (gRPC clients refuse a group without one), zone empty when none is given.
                group.locality = Envoy_Config_Core_V3_Locality()
                if !zone.isEmpty { group.locality.zone = zone }
                group.priority = UInt32(metadata.priority)
                group.lbEndpoints = [entry]
                groups.append(group)
            }
        }
        // A locality's weight is its endpoints' weights together (gRPC clients skip localities without one).
        for index in groups.indices {
            groups[index].loadBalancingWeight = Google_Protobuf_UInt32Value(groups[index].lbEndpoints.reduce(0) { $0 + $1.loadBalancingWeight.value })
        }
        assignment.endpoints = groups
        return assignment
    }

    // MARK: Pieces

    static func address(_ hostPort: HostPort) -> Envoy_Config_Core_V3_Address {
        var address = Envoy_Config_Core_V3_Address()
        address.socketAddress.address = hostPort.host
        address.socketAddress.portValue = UInt32(hostPort.port)
        return address
    }

    static func metadata(_ options: some SwiftProtobuf.Message) throws -> Envoy_Config_Core_V3_Metadata {
        var metadata = Envoy_Config_Core_V3_Metadata()
        metadata.typedFilterMetadata[XDSNames.options] = try XDSEncoder.pack(options)
        return metadata
    }

    /// `message` in an Any, serialized now: an Any made with `Google_Protobuf_Any(message:)` keeps the message
    /// and encodes it again every time it is written (once per sidecar per push).
    public static func pack(_ message: some SwiftProtobuf.Message) throws -> Google_Protobuf_Any {
        var any = Google_Protobuf_Any()
        any.typeURL = "type.googleapis.com/" + type(of: message).protoMessageName
        any.value = Data(try message.serializedBytes() as [UInt8])
        return any
    }

    public static func protoDuration(_ duration: Duration) -> Google_Protobuf_Duration {
        let nanoseconds = duration.nanoseconds
        return Google_Protobuf_Duration(seconds: nanoseconds / 1_000_000_000, nanos: Int32(nanoseconds % 1_000_000_000))
    }
}

extension Google_Protobuf_UInt32Value {
    init(_ value: UInt32) {
        self.init()
        self.value = value
    }
}

extension Google_Protobuf_UInt64Value {
    init(_ value: UInt64) {
        self.init()
        self.value = value
    }
}
