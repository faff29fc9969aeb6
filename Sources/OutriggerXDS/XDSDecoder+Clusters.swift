import Foundation
import OutriggerConfig
import SwiftProtobuf
import Yams

/// Clusters: Envoy's Cluster (with its endpoints, health checks and upstream TLS) into the config's cluster keys.
extension XDSDecoder {
    static func clusterDocument(_ cluster: Envoy_Config_Cluster_V3_Cluster,
                                _ assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment?) throws(XDSRejection) -> Node {
        func refuse(_ message: String) -> XDSRejection { XDSRejection(type: .cluster, name: cluster.name, message: message) }
        let options = try self.options(cluster.metadata, as: Outrigger_V1_ClusterOptions.self, type: .cluster, name: cluster.name)
        let document = Document()
        document["name"] = string(cluster.name)
        guard case .type(let discovery)? = cluster.clusterDiscoveryType, discovery == .eds || discovery == .static else {
            throw refuse("type: only EDS and STATIC clusters are implemented")
        }
        var endpoints: [Node] = []
        let sourced = discovery == .eds ? assignment : cluster.loadAssignment
        for group in sourced?.endpoints ?? [] {
            for entry in group.lbEndpoints {
                guard case .socketAddress(let socket)? = entry.endpoint.address.address, case .portValue(let port)? = socket.portSpecifier, socket.protocol == .tcp else {
                    throw XDSRejection(type: .endpoints, name: cluster.name, message: "lb_endpoints: expected a TCP socket_address with a port_value")
                }
                if entry.healthStatus == .unhealthy || entry.healthStatus == .draining || entry.healthStatus == .timeout { continue }
                let endpoint = Document()
                endpoint["address"] = string(HostPort(host: socket.address, port: Int(port)).description)
                if entry.hasLoadBalancingWeight { endpoint["weight"] = number(entry.loadBalancingWeight.value) }
                if !group.locality.zone.isEmpty { endpoint["zone"] = string(group.locality.zone) }
                if group.priority > 0 { endpoint["priority"] = number(group.priority) }
                endpoints.append(endpoint.node)
            }
        }
        document["endpoints"] = sequence(endpoints)
        if cluster.hasHTTP2ProtocolOptions {
            if cluster.http2ProtocolOptions.hasMaxConcurrentStreams { throw refuse("http2_protocol_options.max_concurrent_streams: not implemented") }
            document["protocol"] = string("http2")
        }
        if cluster.hasTransportSocket {
            document["tls"] = try upstreamTLSDocument(cluster.transportSocket, cluster: cluster.name)
        }
        if case .leastRequestLbConfig(let config)? = cluster.lbConfig, config.hasChoiceCount, config.choiceCount.value != 2 {
            throw refuse("least_request_lb_config.choice_count: only 2 (power of two choices) is implemented")
        }
        if cluster.hasConnectTimeout { document["connectTimeout"] = duration(cluster.connectTimeout) }
        if options.hasTimeout { document["timeout"] = duration(options.timeout) }
        if cluster.hasDnsRefreshRate { document["dnsRefreshInterval"] = duration(cluster.dnsRefreshRate) }

        let balancer = Document()
        let policy: String
        switch cluster.lbPolicy {
        case .roundRobin: policy = "round_robin"
        case .random: policy = "random"
        case .leastRequest: policy = options.peakEwma ? "peak_ewma" : "least_request"
        case .ringHash: policy = "ring_hash"
        case .maglev: policy = "maglev"
        default: throw refuse("lb_policy: \(cluster.lbPolicy) is not implemented")
        }
        balancer["policy"] = string(policy)
        if options.peakEwma {
            if options.hasEwmaDecay { balancer["decay"] = duration(options.ewmaDecay) }
            if options.hasEwmaDefaultRtt { balancer["defaultRTT"] = duration(options.ewmaDefaultRtt) }
        }
        if case .maglevLbConfig(let maglev)? = cluster.lbConfig, maglev.hasTableSize { balancer["tableSize"] = number(maglev.tableSize.value) }
        if cluster.commonLbConfig.hasHealthyPanicThreshold { balancer["panicThreshold"] = number(Int(cluster.commonLbConfig.healthyPanicThreshold.value)) }
        let slowStart: Envoy_Config_Cluster_V3_Cluster.SlowStartConfig? = switch cluster.lbConfig {
        case .roundRobinLbConfig(let config) where config.hasSlowStartConfig: config.slowStartConfig
        case .leastRequestLbConfig(let config) where config.hasSlowStartConfig: config.slowStartConfig
        default: nil
        }
        if let slowStart {
            let start = Document()
            start["window"] = duration(slowStart.slowStartWindow)
            if options.slowStartAggression > 0 { start["aggression"] = string("\(options.slowStartAggression)") }
            if slowStart.hasMinWeightPercent { start["minWeightPercent"] = number(Int(slowStart.minWeightPercent.value)) }
            balancer["slowStart"] = start.node
        }
        if options.hasHashPolicy {
            let hash = Document()
            switch options.hashPolicy.key {
            case .header(let name): hash["header"] = string(name)
            case .cookie(let name):
                hash["cookie"] = string(name)
                if options.hashPolicy.hasCookieTtl { hash["ttl"] = duration(options.hashPolicy.cookieTtl) }
            case .clientAddress: hash["clientAddress"] = bool(true)
            case nil: break
            }
            balancer["hashPolicy"] = hash.node
        }
        document["loadBalancer"] = balancer.node

        if options.hasPool {
            let pool = Document()
            pool["maxConnectionsPerEndpoint"] = number(options.pool.maxConnectionsPerEndpoint)
            pool["maxPendingRequests"] = number(options.pool.maxPendingRequests)
            if options.pool.hasIdleTimeout { pool["idleTimeout"] = duration(options.pool.idleTimeout) }
            document["pool"] = pool.node
        }
        if cluster.healthChecks.count > 1 { throw refuse("health_checks: only one health check per cluster is implemented") }
        if let check = cluster.healthChecks.first {
            document["healthChecks"] = try healthCheckDocument(check, options.healthCheck, refuse: { refuse("health_checks[0].\($0)") })
        }
        if options.hasEndpointDrainTimeout { document["endpointDrainTimeout"] = duration(options.endpointDrainTimeout) }
        if options.hasRetryBudget {
            let budget = Document()
            budget["percent"] = number(options.retryBudget.percent)
            budget["minRetriesPerSecond"] = number(options.retryBudget.minRetriesPerSecond)
            if options.retryBudget.hasWindow { budget["window"] = duration(options.retryBudget.window) }
            document["retryBudget"] = budget.node
        }
        if cluster.hasOutlierDetection {
            let outliers = cluster.outlierDetection
            let detection = Document()
            let counts: [(String, Bool, UInt32)] = [
                ("consecutive5xx", outliers.hasConsecutive5Xx, outliers.consecutive5Xx.value),
                ("consecutiveGatewayFailure", outliers.hasConsecutiveGatewayFailure, outliers.consecutiveGatewayFailure.value),
                ("maxEjectionPercent", outliers.hasMaxEjectionPercent, outliers.maxEjectionPercent.value),
                ("failurePercentageThreshold", outliers.hasFailurePercentageThreshold, outliers.failurePercentageThreshold.value),
                ("failurePercentageMinimumHosts", outliers.hasFailurePercentageMinimumHosts, outliers.failurePercentageMinimumHosts.value),
                ("failurePercentageRequestVolume", outliers.hasFailurePercentageRequestVolume, outliers.failurePercentageRequestVolume.value),
                ("successRateStdevFactor", outliers.hasSuccessRateStdevFactor, outliers.successRateStdevFactor.value),
                ("successRateMinimumHosts", outliers.hasSuccessRateMinimumHosts, outliers.successRateMinimumHosts.value),
                ("successRateRequestVolume", outliers.hasSuccessRateRequestVolume, outliers.successRateRequestVolume.value),
            ]
            for (key, present, value) in counts where present { detection[key] = number(value) }
            if outliers.hasInterval { detection["interval"] = duration(outliers.interval) }
            if outliers.hasBaseEjectionTime { detection["baseEjectionTime"] = duration(outliers.baseEjectionTime) }
            if outliers.hasMaxEjectionTime { detection["maxEjectionTime"] = duration(outliers.maxEjectionTime) }
            document["outlierDetection"] = detection.node
        }
        if cluster.hasCircuitBreakers {
            guard cluster.circuitBreakers.thresholds.count <= 1, cluster.circuitBreakers.thresholds.first?.priority ?? .default == .default else {
                throw refuse("circuit_breakers.thresholds: only one, at DEFAULT priority, is implemented")
            }
            if let thresholds = cluster.circuitBreakers.thresholds.first {
                if thresholds.hasRetryBudget { throw refuse("circuit_breakers.thresholds[0].retry_budget: use outrigger.v1 ClusterOptions.retry_budget (requests over a window, not concurrency)") }
                let limits = Document()
                if thresholds.hasMaxRequests { limits["maxRequests"] = number(thresholds.maxRequests.value) }
                if thresholds.hasMaxRetries { limits["maxActiveRetries"] = number(thresholds.maxRetries.value) }
                if thresholds.hasMaxConnections { limits["maxConnections"] = number(thresholds.maxConnections.value) }
                if thresholds.hasMaxPendingRequests { limits["maxPendingRequests"] = number(thresholds.maxPendingRequests.value) }
                document["limits"] = limits.node
            }
        }
        if options.hasBreakers {
            let breakers = Document()
            let given = options.breakers
            breakers["consecutiveFailures"] = number(given.consecutiveFailures)
            breakers["failureRatePercent"] = number(given.failureRatePercent)
            if given.minimumRequests > 0 { breakers["minimumRequests"] = number(given.minimumRequests) }
            if given.halfOpenRequests > 0 { breakers["halfOpenRequests"] = number(given.halfOpenRequests) }
            if given.hasWindow { breakers["window"] = duration(given.window) }
            if given.hasOpenTime { breakers["openTime"] = duration(given.openTime) }
            if given.hasMaxOpenTime { breakers["maxOpenTime"] = duration(given.maxOpenTime) }
            document["breakers"] = breakers.node
        }
        if options.hasStreamIdleTimeout { document["streamIdleTimeout"] = duration(options.streamIdleTimeout) }
        return document.node
    }

    /// A cluster's `transport_socket` (Envoy's UpstreamTlsContext) as its `tls`: files on this machine, the CA
    /// (or the system's roots), the names expected and the oldest version. No validation context is Envoy's
    /// "verify nothing", said as `insecureSkipVerify`.
    static func upstreamTLSDocument(_ socket: Envoy_Config_Core_V3_TransportSocket, cluster: String) throws(XDSRejection) -> Node {
        func refuse(_ message: String) -> XDSRejection { XDSRejection(type: .cluster, name: cluster, message: "transport_socket\(message)") }
        guard socket.name == XDSNames.tlsTransportSocket, case .typedConfig(let typed)? = socket.configType else {
            throw refuse(": only \(XDSNames.tlsTransportSocket) with a typed_config (UpstreamTlsContext) is implemented")
        }
        let context = try unpack(typed, as: Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext.self, type: .cluster, name: cluster,
                                 field: "transport_socket.typed_config")
        let common = context.commonTlsContext
        let document = Document()
        if !context.sni.isEmpty { document["sni"] = string(context.sni) }
        switch common.tlsParams.tlsMinimumProtocolVersion {
        case .tlsAuto, .tlsv12: break
        case .tlsv13: document["minVersion"] = string(TLSConfig.MinimumVersion.tls13.rawValue)
        default: throw refuse(".common_tls_context.tls_params.tls_minimum_protocol_version: TLS 1.2 is the oldest allowed")
        }
        guard common.tlsCertificates.count <= 1 else { throw refuse(".common_tls_context.tls_certificates: at most one client certificate is implemented") }
        if let pair = common.tlsCertificates.first {
            guard case .filename(let chain)? = pair.certificateChain.specifier, case .filename(let key)? = pair.privateKey.specifier else {
                throw refuse(".common_tls_context.tls_certificates[0]: expected certificate_chain and private_key as filenames")
            }
            document["certificate"] = string(chain)
            document["privateKey"] = string(key)
        }
        if case .validationContext(let validation)? = common.validationContextType {
            if case .filename(let ca)? = validation.trustedCa.specifier {
                document["caFile"] = string(ca)
            } else if !validation.hasSystemRootCerts {
                throw refuse(".common_tls_context.validation_context: expected trusted_ca (a filename) or system_root_certs")
            }
            var names: [Node] = []
            for (index, matcher) in validation.matchTypedSubjectAltNames.enumerated() {
                guard matcher.sanType == .uri || matcher.sanType == .dns, case .exact(let name)? = matcher.matcher.matchPattern, !matcher.matcher.ignoreCase else {
                    throw refuse(".common_tls_context.validation_context.match_typed_subject_alt_names[\(index)]: only URI and DNS names matched exactly are implemented")
                }
                names.append(string(name))
            }
            if !names.isEmpty { document["subjectAltNames"] = sequence(names) }
        } else {
            document["insecureSkipVerify"] = bool(true)
        }
        return document.node
    }

    static func healthCheckDocument(_ check: Envoy_Config_Core_V3_HealthCheck, _ extra: Outrigger_V1_ClusterOptions.HealthCheck,
                                    refuse: (String) -> XDSRejection) throws(XDSRejection) -> Node {
        let document = Document()
        switch check.healthChecker {
        case .httpHealthCheck(let http):
            document["type"] = string("http")
            document["path"] = string(http.path)
            if !http.host.isEmpty { document["host"] = string(http.host) }
            if !extra.method.isEmpty { document["method"] = string(extra.method) }
            if !extra.bodyContains.isEmpty { document["bodyContains"] = string(extra.bodyContains) }
            if !http.expectedStatuses.isEmpty {
                document["expectedStatuses"] = sequence(http.expectedStatuses.map { range in
                    let last = range.end - 1
                    return string(range.start == last ? "\(range.start)" : "\(range.start)-\(last)")
                })
            }
        case .tcpHealthCheck:
            document["type"] = string("tcp")
        case .grpcHealthCheck(let grpc):
            document["type"] = string("grpc")
            document["service"] = string(grpc.serviceName)
            if !grpc.authority.isEmpty { document["host"] = string(grpc.authority) }
        case nil:
            throw refuse("health_checker: expected http_health_check, tcp_health_check or grpc_health_check")
        }
        if check.hasInterval { document["interval"] = duration(check.interval) }
        if check.hasUnhealthyInterval { document["unhealthyInterval"] = duration(check.unhealthyInterval) }
        if check.hasTimeout { document["timeout"] = duration(check.timeout) }
        if check.hasInitialJitter && check.initialJitter != Google_Protobuf_Duration() { document["initialJitter"] = duration(check.initialJitter) }
        if check.hasIntervalJitter && check.intervalJitter != Google_Protobuf_Duration() { document["jitter"] = duration(check.intervalJitter) }
        if check.hasHealthyThreshold { document["healthyThreshold"] = number(check.healthyThreshold.value) }
        if check.hasUnhealthyThreshold { document["unhealthyThreshold"] = number(check.unhealthyThreshold.value) }
        return document.node
    }
}
