import Foundation
import OutriggerConfig
import SwiftProtobuf
import Yams

/// Why a pushed resource was refused: the resource, and the field and reason (the NACK's `error_detail`).
public struct XDSRejection: Error, Sendable, Hashable, CustomStringConvertible {
    public var type: XDSType
    public var name: String
    public var message: String

    public init(type: XDSType, name: String, message: String) {
        self.type = type
        self.name = name
        self.message = message
    }

    public var description: String { "\(type.shortName) '\(name)': \(message)" }
}

/// xDS resources back into our config: each resource is translated into the config's own document tree
/// (the keys of `sidecar.yaml`), and the document is decoded by the same decoder as a file — so a push is
/// validated exactly as a file is. What cannot be translated (an unknown field, a matcher or filter we do
/// not implement) is refused with the resource and field; nothing is silently dropped.
public struct XDSDecoder: Sendable {
    /// Listener and route resources (by name) the sidecar has accepted.
    public var listeners: [String: Google_Protobuf_Any] = [:]
    public var routes: [String: Google_Protobuf_Any] = [:]
    public var clusters: [String: Google_Protobuf_Any] = [:]
    public var endpoints: [String: Google_Protobuf_Any] = [:]

    public init() {}

    /// The resources of one type, as a state-of-the-world response replaces them.
    public subscript(type: XDSType) -> [String: Google_Protobuf_Any] {
        get {
            switch type {
            case .listener: listeners
            case .route: routes
            case .cluster: clusters
            case .endpoints: endpoints
            }
        }
        set {
            switch type {
            case .listener: listeners = newValue
            case .route: routes = newValue
            case .cluster: clusters = newValue
            case .endpoints: endpoints = newValue
            }
        }
    }

    /// Route configurations the listeners name (what to subscribe to over RDS).
    public func routeNames() throws(XDSRejection) -> [String] {
        var names: [String] = []
        for name in listeners.keys.sorted() {
            if let routeName = try Self.connectionManager(of: listeners[name]!, name: name).routeName { names.append(routeName) }
        }
        return names
    }

    /// The ClusterLoadAssignments the EDS clusters name (what to subscribe to over EDS): each cluster's
    /// `eds_cluster_config.service_name`, or its own name. A STATIC cluster carries its endpoints itself.
    public func endpointNames() throws(XDSRejection) -> [String] {
        var names: [String] = []
        for name in clusters.keys.sorted() {
            if let endpointsName = try Self.endpointsName(of: Self.unpack(clusters[name]!, as: Envoy_Config_Cluster_V3_Cluster.self, type: .cluster, name: name)) {
                names.append(endpointsName)
            }
        }
        return names
    }

    /// A resource's name, decoded (once: what is checked here is not decoded again) and checked as every
    /// resource is: a resource with a field this build does not declare is refused by its name.
    public static func name(of body: Google_Protobuf_Any, type: XDSType) throws(XDSRejection) -> String {
        guard body.typeURL == type.rawValue else {
            throw XDSRejection(type: type, name: "?", message: "a \(type.shortName) response carried a \(body.typeURL)")
        }
        func named(_ name: String) throws(XDSRejection) -> String {
            switch type {
            case .listener: try unpack(body, as: Envoy_Config_Listener_V3_Listener.self, type: type, name: name).name
            case .route: try unpack(body, as: Envoy_Config_Route_V3_RouteConfiguration.self, type: type, name: name).name
            case .cluster: try unpack(body, as: Envoy_Config_Cluster_V3_Cluster.self, type: type, name: name).name
            case .endpoints: try unpack(body, as: Envoy_Config_Endpoint_V3_ClusterLoadAssignment.self, type: type, name: name).clusterName
            }
        }
        do {
            return try named("?")
        } catch {
            // Refused: say which resource, if its bytes give its name.
            let name = (try? uncheckedName(of: body, type: type)) ?? "?"
            throw XDSRejection(type: type, name: name, message: error.message)
        }
    }

    /// A resource's name from its bytes alone, its fields not checked (the control-plane simulator's sidecars
    /// decode each resource this way, each on its own).
    public static func uncheckedName(of body: Google_Protobuf_Any, type: XDSType) throws(XDSRejection) -> String {
        guard body.typeURL == type.rawValue else {
            throw XDSRejection(type: type, name: "?", message: "a \(type.shortName) response carried a \(body.typeURL)")
        }
        do {
            switch type {
            case .listener: return try Envoy_Config_Listener_V3_Listener(serializedBytes: body.value).name
            case .route: return try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: body.value).name
            case .cluster: return try Envoy_Config_Cluster_V3_Cluster(serializedBytes: body.value).name
            case .endpoints: return try Envoy_Config_Endpoint_V3_ClusterLoadAssignment(serializedBytes: body.value).clusterName
            }
        } catch {
            throw XDSRejection(type: type, name: "?", message: "cannot decode: \(error)")
        }
    }

    static func endpointsName(of cluster: Envoy_Config_Cluster_V3_Cluster) -> String? {
        guard case .type(.eds)? = cluster.clusterDiscoveryType else { return nil }
        return cluster.edsClusterConfig.serviceName.isEmpty ? cluster.name : cluster.edsClusterConfig.serviceName
    }

    /// Whether every route configuration the listeners name and every EDS cluster's endpoints have arrived.
    public func isComplete() throws(XDSRejection) -> Bool {
        let routeNames = try routeNames()
        let endpointNames = try endpointNames()
        return routeNames.allSatisfy { routes[$0] != nil } && endpointNames.allSatisfy { endpoints[$0] != nil }
    }

    /// A listener's routes: inline, or the RouteConfiguration it names, if that has arrived.
    func routeConfiguration(of manager: ConnectionManager) throws(XDSRejection) -> Envoy_Config_Route_V3_RouteConfiguration? {
        if let inline = manager.inlineRoutes { return inline }
        guard let name = manager.routeName, let body = routes[name] else { return nil }
        return try Self.unpack(body, as: Envoy_Config_Route_V3_RouteConfiguration.self, type: .route, name: name)
    }

    /// The ClusterLoadAssignment an EDS cluster names, if it has arrived.
    func assignment(for cluster: Envoy_Config_Cluster_V3_Cluster) throws(XDSRejection) -> Envoy_Config_Endpoint_V3_ClusterLoadAssignment? {
        guard let name = Self.endpointsName(of: cluster), let body = endpoints[name] else { return nil }
        return try Self.unpack(body, as: Envoy_Config_Endpoint_V3_ClusterLoadAssignment.self, type: .endpoints, name: name)
    }

    /// Checks on its own each resource a response of `type` brought or changed (named `names`), while others
    /// they name are still on their way: the listeners and clusters themselves, the listeners whose routes and
    /// the clusters whose endpoints they are. What was accepted before was checked then.
    public func checkEach(arrived type: XDSType, names: Set<String>) throws(XDSRejection) {
        for (name, body) in listeners {
            let manager = try Self.connectionManager(of: body, name: name)
            guard type == .listener && names.contains(name) || type == .route && manager.routeName.map(names.contains) == true else { continue }
            if let routeConfiguration = try routeConfiguration(of: manager) {
                _ = try Self.listenerDocument(manager.listener, manager.connectionManager, routeConfiguration)
            }
        }
        for (name, body) in routes where type == .route && names.contains(name) {
            let routes = try Self.unpack(body, as: Envoy_Config_Route_V3_RouteConfiguration.self, type: .route, name: name)
            for host in routes.virtualHosts {
                for (index, route) in host.routes.enumerated() {
                    _ = try Self.routeDocument(route, routes: name, where: "virtual_hosts['\(host.name)'].routes[\(index)]")
                }
            }
        }
        for (name, body) in clusters where type == .cluster || type == .endpoints {
            let cluster = try Self.unpack(body, as: Envoy_Config_Cluster_V3_Cluster.self, type: .cluster, name: name)
            guard type == .cluster && names.contains(name) || type == .endpoints && Self.endpointsName(of: cluster).map(names.contains) == true else { continue }
            _ = try Self.clusterDocument(cluster, try assignment(for: cluster))
        }
    }

    /// The config these resources say, on top of `base` (the sidecar's own admin, concurrency, drain and zone).
    public func config(base: SidecarConfig) throws(XDSRejection) -> SidecarConfig {
        defer { Self.decoded.rotate() }
        var listenerDocuments: [Node] = []
        let listenerNames = listeners.keys.sorted()
        var routeOwners: [String] = []
        for name in listenerNames {
            let manager = try Self.connectionManager(of: listeners[name]!, name: name)
            guard let routeConfiguration = try routeConfiguration(of: manager) else {
                throw XDSRejection(type: .listener, name: name, message: "route configuration '\(manager.routeName ?? "")' has not arrived")
            }
            routeOwners.append(manager.routeName ?? name)
            listenerDocuments.append(try Self.listenerDocument(manager.listener, manager.connectionManager, routeConfiguration))
        }
        let clusterNames = clusters.keys.sorted()
        var clusterDocuments: [Node] = []
        for name in clusterNames {
            let cluster = try Self.unpack(clusters[name]!, as: Envoy_Config_Cluster_V3_Cluster.self, type: .cluster, name: name)
            clusterDocuments.append(try Self.clusterDocument(cluster, try assignment(for: cluster)))
        }
        let document = Document()
        document["listeners"] = Self.sequence(listenerDocuments)
        document["clusters"] = Self.sequence(clusterDocuments)
        var decoded: SidecarConfig
        do {
            decoded = try SidecarConfig.decode(document: document.node, source: "xds")
        } catch {
            // Name the resource the first issue is in: listeners[i] (or its routes) or clusters[i].
            let issue = error.issues[0]
            let (type, name, rest) = Self.resource(of: issue.keyPath, listeners: listenerNames, routeOwners: routeOwners, clusters: clusterNames)
            let more = error.issues.count > 1 ? " (and \(error.issues.count - 1) more)" : ""
            throw XDSRejection(type: type, name: name, message: "\(rest.isEmpty ? "" : "\(rest): ")\(issue.message)\(more)")
        }
        decoded.admin = base.admin
        decoded.concurrency = base.concurrency
        decoded.drainTimeout = base.drainTimeout
        decoded.zone = base.zone
        decoded.controlPlane = base.controlPlane
        return decoded
    }

    /// The resource a decoder key path points into, and the path within it.
    static func resource(of keyPath: String, listeners: [String], routeOwners: [String], clusters: [String]) -> (XDSType, String, String) {
        func index(after prefix: String) -> (Int, String)? {
            guard keyPath.hasPrefix(prefix + "["), let close = keyPath.firstIndex(of: "]"),
                  let number = Int(keyPath[keyPath.index(keyPath.startIndex, offsetBy: prefix.count + 1)..<close]) else { return nil }
            var rest = String(keyPath[keyPath.index(after: close)...])
            if rest.hasPrefix(".") { rest.removeFirst() }
            return (number, rest)
        }
        if let (number, rest) = index(after: "clusters"), number < clusters.count {
            return (.cluster, clusters[number], rest)
        }
        if let (number, rest) = index(after: "listeners"), number < listeners.count {
            if rest.hasPrefix("virtualHosts") { return (.route, routeOwners[number], rest) }
            return (.listener, listeners[number], rest)
        }
        return (.listener, listeners.first ?? "", keyPath)
    }

    // MARK: Listeners

    struct ConnectionManager {
        var listener: Envoy_Config_Listener_V3_Listener
        var connectionManager: Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager
        var routeName: String?
        var inlineRoutes: Envoy_Config_Route_V3_RouteConfiguration?
    }

    static func connectionManager(of body: Google_Protobuf_Any, name: String) throws(XDSRejection) -> ConnectionManager {
        let listener = try unpack(body, as: Envoy_Config_Listener_V3_Listener.self, type: .listener, name: name)
        func refuse(_ message: String) -> XDSRejection { XDSRejection(type: .listener, name: name, message: message) }
        if listener.hasApiListener { throw refuse("api_listener: a proxyless gRPC listener has no socket for a sidecar to serve") }
        guard listener.filterChains.count == 1, listener.filterChains[0].filters.count == 1 else {
            throw refuse("filter_chains: expected one filter chain with one filter (http_connection_manager), found \(listener.filterChains.count) chains")
        }
        let filter = listener.filterChains[0].filters[0]
        guard case .typedConfig(let typed) = filter.configType else { throw refuse("filter_chains[0].filters[0]: expected a typed_config") }
        let manager = try unpack(typed, as: Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager.self,
                                 type: .listener, name: name, field: "filter_chains[0].filters[0].typed_config")
        if manager.codecType != .auto { throw refuse("http_connection_manager.codec_type: every listener serves HTTP/1.1 and HTTP/2 (AUTO); \(manager.codecType) is not implemented") }
        if !manager.via.isEmpty { throw refuse("http_connection_manager.via: not implemented (outrigger.v1 ListenerOptions.add_via adds a Via header)") }
        if manager.hasStreamIdleTimeout { throw refuse("http_connection_manager.stream_idle_timeout: not implemented per listener (outrigger.v1 ClusterOptions.stream_idle_timeout is per cluster)") }
        for (index, httpFilter) in manager.httpFilters.enumerated() where httpFilter.name != XDSNames.router && !httpFilter.isOptional {
            throw refuse("http_filters[\(index)]: filter '\(httpFilter.name)' is not implemented (only \(XDSNames.router))")
        }
        switch manager.routeSpecifier {
        case .rds(let rds): return ConnectionManager(listener: listener, connectionManager: manager, routeName: rds.routeConfigName)
        case .routeConfig(let routes): return ConnectionManager(listener: listener, connectionManager: manager, inlineRoutes: routes)
        case nil: throw refuse("http_connection_manager: expected rds or route_config")
        }
    }

    static func listenerDocument(_ listener: Envoy_Config_Listener_V3_Listener,
                                 _ manager: Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager,
                                 _ routes: Envoy_Config_Route_V3_RouteConfiguration) throws(XDSRejection) -> Node {
        func refuse(_ message: String) -> XDSRejection { XDSRejection(type: .listener, name: listener.name, message: message) }
        let options = try self.options(listener.metadata, as: Outrigger_V1_ListenerOptions.self, type: .listener, name: listener.name)
        let document = Document()
        document["name"] = string(listener.name)
        guard case .socketAddress(let socket)? = listener.address.address, case .portValue(let port)? = socket.portSpecifier, socket.protocol == .tcp else {
            throw refuse("address: expected a TCP socket_address with a port_value")
        }
        document["address"] = string(HostPort(host: socket.address, port: Int(port)).description)
        document["direction"] = string(listener.trafficDirection == .outbound ? "outbound" : "inbound")
        if options.maxRequestHeadersBytes > 0 {
            document["maxRequestHeadersBytes"] = number(options.maxRequestHeadersBytes)
        } else if manager.hasMaxRequestHeadersKb {
            document["maxRequestHeadersBytes"] = number(manager.maxRequestHeadersKb.value * 1024)
        }
        if manager.hasRequestHeadersTimeout { document["requestHeadersTimeout"] = duration(manager.requestHeadersTimeout) }
        if options.hasIdleTimeout { document["idleTimeout"] = duration(options.idleTimeout) }
        if options.hasHandshakeTimeout { document["handshakeTimeout"] = duration(options.handshakeTimeout) }
        if options.hasMaxConnections { document["maxConnections"] = number(options.maxConnections.value) }
        if options.hasMaxRequestBodyBytes { document["maxRequestBodyBytes"] = number(options.maxRequestBodyBytes.value) }
        if options.addVia { document["addVia"] = bool(true) }
        if options.trustOverrideHeaders { document["trustOverrideHeaders"] = bool(true) }
        if options.hasAccessLog {
            let log = Document()
            log["path"] = string(options.accessLog.path)
            if !options.accessLog.format.isEmpty { log["format"] = string(options.accessLog.format) }
            document["accessLog"] = log.node
        }
        if !options.tlsCertificatePath.isEmpty || !options.tlsPrivateKeyPath.isEmpty {
            let tls = Document()
            tls["certificate"] = string(options.tlsCertificatePath)
            tls["privateKey"] = string(options.tlsPrivateKeyPath)
            if !options.tlsMinVersion.isEmpty { tls["minVersion"] = string(options.tlsMinVersion) }
            if !options.tlsCipherSuites.isEmpty { tls["cipherSuites"] = sequence(options.tlsCipherSuites.map { string($0) }) }
            if !options.tlsClientCaPath.isEmpty {
                let clients = Document()
                clients["caFile"] = string(options.tlsClientCaPath)
                if !options.tlsClientSubjectAltNames.isEmpty {
                    clients["subjectAltNames"] = sequence(options.tlsClientSubjectAltNames.map { string($0) })
                }
                tls["clientCertificates"] = clients.node
            }
            document["tls"] = tls.node
        }
        if options.hasSendTimeout { document["sendTimeout"] = duration(options.sendTimeout) }
        if options.hasRapidReset {
            let rapidReset = Document()
            rapidReset["maxResetsPerAddress"] = number(options.rapidReset.maxResetsPerAddress)
            if options.rapidReset.hasWindow { rapidReset["window"] = duration(options.rapidReset.window) }
            if options.rapidReset.hasRefuseFor { rapidReset["refuseFor"] = duration(options.rapidReset.refuseFor) }
            document["rapidReset"] = rapidReset.node
        }
        if !options.overloadPriority.isEmpty { document["overloadPriority"] = string(options.overloadPriority) }
        var hosts: [Node] = []
        for host in routes.virtualHosts {
            let hostDocument = Document()
            hostDocument["name"] = string(host.name)
            hostDocument["domains"] = sequence(host.domains.map(string))
            var routeDocuments: [Node] = []
            for (index, route) in host.routes.enumerated() {
                routeDocuments.append(try routeDocument(route, routes: routes.name, where: "virtual_hosts['\(host.name)'].routes[\(index)]"))
            }
            hostDocument["routes"] = sequence(routeDocuments)
            hosts.append(hostDocument.node)
        }
        document["virtualHosts"] = sequence(hosts)
        return document.node
    }

    static func routeDocument(_ route: Envoy_Config_Route_V3_Route, routes: String, where place: String) throws(XDSRejection) -> Node {
        func refuse(_ message: String) -> XDSRejection { XDSRejection(type: .route, name: routes, message: "\(place).\(message)") }
        let document = Document()
        if !route.name.isEmpty { document["name"] = string(route.name) }
        let match = Document()
        switch route.match.pathSpecifier {
        case .prefix(let prefix): match["prefix"] = string(prefix.isEmpty ? "/" : prefix)
        case .path(let path): match["path"] = string(path)
        case .safeRegex(let regex): match["regex"] = string(regex.regex)
        case nil: match["prefix"] = string("/")
        }
        if route.match.hasCaseSensitive && !route.match.caseSensitive.value {
            throw refuse("match.case_sensitive: case-insensitive path matching is not implemented")
        }
        var headers: [Node] = []
        for (index, matcher) in route.match.headers.enumerated() {
            let field = "match.headers[\(index)]"
            if matcher.name == ":method" {
                match["methods"] = sequence(try methods(matcher, refuse: { refuse("\(field): \($0)") }).map(string))
                continue
            }
            let header = Document()
            header["name"] = string(matcher.name)
            switch matcher.headerMatchSpecifier {
            case .presentMatch(let present):
                header["present"] = bool(present != matcher.invertMatch)
            case .exactMatch(let value) where !matcher.invertMatch:
                header["exact"] = string(value, allowEmpty: true)
            case .prefixMatch(let value) where !matcher.invertMatch:
                header["prefix"] = string(value)
            case .stringMatch(let string) where !matcher.invertMatch && !string.ignoreCase:
                switch string.matchPattern {
                case .exact(let value): header["exact"] = self.string(value, allowEmpty: true)
                case .prefix(let value): header["prefix"] = self.string(value)
                default: throw refuse("\(field).string_match: only exact and prefix are implemented")
                }
            default:
                throw refuse("\(field): only present, exact and prefix header matches (not inverted, case-sensitive) are implemented")
            }
            headers.append(header.node)
        }
        if !headers.isEmpty { match["headers"] = sequence(headers) }
        document["match"] = match.node

        guard case .route(let action)? = route.action else {
            throw refuse("action: only route actions are implemented (not direct_response or redirect)")
        }
        switch action.clusterSpecifier {
        case .cluster(let name): document["cluster"] = string(name)
        case .weightedClusters(let weighted):
            document["weightedClusters"] = sequence(weighted.clusters.map { choice in
                let entry = Document()
                entry["cluster"] = string(choice.name)
                entry["weight"] = number(choice.hasWeight ? choice.weight.value : 0)
                return entry.node
            })
        case nil: throw refuse("route.cluster_specifier: expected cluster or weighted_clusters")
        }
        if !action.prefixRewrite.isEmpty { document["prefixRewrite"] = string(action.prefixRewrite) }
        if case .hostRewriteLiteral(let host)? = action.hostRewriteSpecifier { document["hostRewrite"] = string(host) }
        if action.hasTimeout && action.timeout != Google_Protobuf_Duration() { document["timeout"] = duration(action.timeout) }

        let options = try self.options(route.metadata, as: Outrigger_V1_RouteOptions.self, type: .route, name: routes)
        if action.hasRetryPolicy {
            let policy = action.retryPolicy
            let retries = Document()
            retries["attempts"] = number((policy.hasNumRetries ? policy.numRetries.value : 1) + 1)
            let conditions = policy.retryOn.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            retries["retryOn"] = sequence(conditions.map(string))
            if !policy.retriableStatusCodes.isEmpty { retries["retriableStatusCodes"] = sequence(policy.retriableStatusCodes.map(number)) }
            if policy.hasPerTryTimeout { retries["perTryTimeout"] = duration(policy.perTryTimeout) }
            if policy.hasRetryBackOff {
                let backoff = Document()
                if policy.retryBackOff.hasBaseInterval { backoff["base"] = duration(policy.retryBackOff.baseInterval) }
                if policy.retryBackOff.hasMaxInterval { backoff["max"] = duration(policy.retryBackOff.maxInterval) }
                retries["backoff"] = backoff.node
            }
            if options.hasRetryAfterMax { retries["retryAfterMax"] = duration(options.retryAfterMax) }
            if options.hasReplayBufferBytes { retries["replayBufferBytes"] = number(options.replayBufferBytes.value) }
            if options.retryNonIdempotent { retries["retryNonIdempotent"] = bool(true) }
            if action.hasHedgePolicy && action.hedgePolicy.hedgeOnPerTryTimeout { retries["hedgeOnPerTryTimeout"] = bool(true) }
            document["retries"] = retries.node
        }
        if action.hasHedgePolicy {
            let hedge = action.hedgePolicy
            if (hedge.hasInitialRequests && hedge.initialRequests.value > 1) || (hedge.hasAdditionalRequestChance && hedge.additionalRequestChance.numerator > 0) {
                throw refuse("route.hedge_policy: only hedge_on_per_try_timeout is implemented")
            }
        }
        switch options.fallback {
        case .fallbackCluster(let name):
            let fallback = Document()
            fallback["cluster"] = string(name)
            document["fallback"] = fallback.node
        case .fallbackResponse(let response):
            let fallback = Document()
            fallback["status"] = number(response.status)
            if !response.headers.isEmpty {
                let headers = Document()
                for header in response.headers { headers[header.name] = string(header.value, allowEmpty: true) }
                fallback["headers"] = headers.node
            }
            fallback["body"] = string(response.body, allowEmpty: true)
            document["fallback"] = fallback.node
        case nil: break
        }
        if let mutations = try headerMutations(route.requestHeadersToAdd, route.requestHeadersToRemove, refuse: { refuse("request_headers_to_add: \($0)") }) {
            document["requestHeaders"] = mutations
        }
        if let mutations = try headerMutations(route.responseHeadersToAdd, route.responseHeadersToRemove, refuse: { refuse("response_headers_to_add: \($0)") }) {
            document["responseHeaders"] = mutations
        }
        return document.node
    }

    /// `:method` exactly, or the anchored alternation `^(GET|HEAD)$` the encoder writes.
    static func methods(_ matcher: Envoy_Config_Route_V3_HeaderMatcher, refuse: (String) -> XDSRejection) throws(XDSRejection) -> [String] {
        guard !matcher.invertMatch, case .stringMatch(let string)? = matcher.headerMatchSpecifier else {
            if case .exactMatch(let method)? = matcher.headerMatchSpecifier, !matcher.invertMatch { return [method] }
            throw refuse("a :method match must be string_match exact or safe_regex ^(A|B)$")
        }
        switch string.matchPattern {
        case .exact(let method): return [method]
        case .safeRegex(let regex) where regex.regex.hasPrefix("^(") && regex.regex.hasSuffix(")$"):
            let alternatives = regex.regex.dropFirst(2).dropLast(2).split(separator: "|").map(String.init)
            if alternatives.allSatisfy(HTTPToken.isToken) { return alternatives }
            throw refuse("a :method regex must list methods as ^(GET|HEAD)$")
        default:
            throw refuse("a :method match must be string_match exact or safe_regex ^(A|B)$")
        }
    }

    static func headerMutations(_ add: [Envoy_Config_Core_V3_HeaderValueOption], _ remove: [String],
                                refuse: (String) -> XDSRejection) throws(XDSRejection) -> Node? {
        guard !add.isEmpty || !remove.isEmpty else { return nil }
        let mutations = Document()
        let appended = Document()
        let replaced = Document()
        for option in add {
            let appends = option.hasAppend ? option.append.value : option.appendAction == .appendIfExistsOrAdd
            switch option.appendAction {
            case .appendIfExistsOrAdd, .overwriteIfExistsOrAdd:
                (appends && option.appendAction == .appendIfExistsOrAdd ? appended : replaced)[option.header.key] = string(option.header.value, allowEmpty: true)
            default:
                throw refuse("append_action \(option.appendAction) of '\(option.header.key)' is not implemented")
            }
        }
        if !appended.isEmpty { mutations["add"] = appended.node }
        if !replaced.isEmpty { mutations["set"] = replaced.node }
        if !remove.isEmpty { mutations["remove"] = sequence(remove.map(string)) }
        return mutations.node
    }

    // MARK: Clusters

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
            document["service"] = string(grpc.serviceName, allowEmpty: true)
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

    // MARK: Messages

    /// Unpacks `body` as `M`, refusing another type and any field this build does not know: a field we do not
    /// implement must not be silently ignored when it would change behaviour.
    static let decoded = DecodedMessages()

    static func unpack<M: SwiftProtobuf.Message & Sendable>(_ body: Google_Protobuf_Any, as: M.Type, type: XDSType, name: String,
                                                 field: String? = nil) throws(XDSRejection) -> M {
        let place = field.map { "\($0): " } ?? ""
        let expected = "type.googleapis.com/" + M.protoMessageName
        guard body.typeURL == expected else {
            throw XDSRejection(type: type, name: name, message: "\(place)expected \(expected), found \(body.typeURL)")
        }
        let key = DecodedMessages.Key(type: ObjectIdentifier(M.self), bytes: body.value)
        if let known = decoded.message(key, as: M.self) { return known }
        let message: M
        do {
            message = try M(serializedBytes: body.value)
        } catch {
            throw XDSRejection(type: type, name: name, message: "\(place)cannot decode \(M.protoMessageName): \(error)")
        }
        // Decoded once; one walk finds a field this build does not declare, at any depth (an `Any` inside is
        // checked when it is unpacked in turn).
        var finder = UnknownFieldFinder(current: M.protoMessageName)
        try? message.traverse(visitor: &finder)
        if let (owner, numbers) = finder.found {
            let fields = numbers.map(String.init).joined(separator: ", ")
            throw XDSRejection(type: type, name: name,
                               message: "\(place)field\(numbers.count == 1 ? "" : "s") \(fields) of \(owner) \(numbers.count == 1 ? "is" : "are") not implemented by Outrigger")
        }
        decoded.remember(message, for: key)
        return message
    }

    static func readVarint(_ bytes: inout Data.SubSequence) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while let byte = bytes.first {
            bytes = bytes.dropFirst()
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    static func options<M: SwiftProtobuf.Message & Sendable>(_ metadata: Envoy_Config_Core_V3_Metadata, as: M.Type, type: XDSType, name: String) throws(XDSRejection) -> M {
        guard let body = metadata.typedFilterMetadata[XDSNames.options] else { return M() }
        return try unpack(body, as: M.self, type: type, name: name, field: "metadata.typed_filter_metadata['\(XDSNames.options)']")
    }

    // MARK: Document pieces

    static func string(_ text: String) -> Node { string(text, allowEmpty: false) }

    static func string(_ text: String, allowEmpty: Bool) -> Node { .scalar(.init(text, implicitTag(), .singleQuoted)) }

    static func number(_ value: some BinaryInteger) -> Node { plain("\(value)") }

    static func bool(_ value: Bool) -> Node { plain(value ? "true" : "false") }

    static func sequence(_ items: [Node]) -> Node { .sequence(.init(items, implicitTag())) }

    static func plain(_ text: String) -> Node { .scalar(.init(text, implicitTag())) }

    /// Yams' `Tag.implicit` builds a new resolver and constructor (a few dictionaries) for every node; a
    /// translated push makes hundreds of thousands of nodes. A tag is resolved in place, so each node gets its
    /// own, sharing these two (never changed after they are made).
    private static let resolver = Resolver.default
    nonisolated(unsafe) private static let constructor = Constructor.default

    static func implicitTag() -> Tag { Tag(.implicit, resolver, constructor) }

    static func duration(_ value: Google_Protobuf_Duration) -> Node {
        let nanoseconds = value.seconds * 1_000_000_000 + Int64(value.nanos)
        return plain(ConfigDuration.format(.nanoseconds(nanoseconds)))
    }
}

/// Walks a decoded message for fields this build does not declare (kept by the decoder as unknown fields):
/// the first message that has some, by name, and their numbers.
struct UnknownFieldFinder: Visitor {
    var current: String
    var found: (message: String, numbers: [UInt64])?

    mutating func visitUnknown(bytes: Data) throws {
        guard found == nil, !bytes.isEmpty else { return }
        var numbers: [UInt64] = []
        var rest = bytes[...]
        while let key = XDSDecoder.readVarint(&rest) {
            numbers.append(key >> 3)
            switch key & 7 {
            case 0: _ = XDSDecoder.readVarint(&rest)
            case 1: rest = rest.dropFirst(8)
            case 2: let length = Int(XDSDecoder.readVarint(&rest) ?? 0); rest = rest.dropFirst(length)
            case 5: rest = rest.dropFirst(4)
            default: rest = rest.dropFirst(rest.count)
            }
        }
        found = (current, numbers)
    }

    mutating func visitSingularMessageField<M: Message>(value: M, fieldNumber: Int) throws {
        guard found == nil else { return }
        let outer = current
        current = M.protoMessageName
        try value.traverse(visitor: &self)
        current = outer
    }

    mutating func visitMapField<KeyType, ValueType>(fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type,
                                                     value: _ProtobufMessageMap<KeyType, ValueType>.BaseType, fieldNumber: Int) throws {
        for message in value.values { try visitSingularMessageField(value: message, fieldNumber: fieldNumber) }
    }

    mutating func visitMapField<KeyType, ValueType: MapValueType>(fieldType: _ProtobufMap<KeyType, ValueType>.Type,
                                                                   value: _ProtobufMap<KeyType, ValueType>.BaseType, fieldNumber: Int) throws {}
    mutating func visitMapField<KeyType, ValueType>(fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type,
                                                     value: _ProtobufEnumMap<KeyType, ValueType>.BaseType, fieldNumber: Int) throws
    where ValueType.RawValue == Int {}
    mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws {}
    mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws {}
    mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws {}
    mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws {}
    mutating func visitSingularStringField(value: String, fieldNumber: Int) throws {}
    mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws {}
    mutating func visitSingularEnumField<E: Enum>(value: E, fieldNumber: Int) throws {}
}

/// A mapping under construction, keys in insertion order.
final class Document {
    private var pairs: [(Node, Node)] = []
    private var index: [String: Int] = [:]

    subscript(key: String) -> Node? {
        get { index[key].map { pairs[$0].1 } }
        set {
            if let at = index[key] {
                pairs.remove(at: at)
                index = [:]
                for (position, pair) in pairs.enumerated() { index[pair.0.scalar!.string] = position }
            }
            if let newValue {
                index[key] = pairs.count
                pairs.append((XDSDecoder.plain(key), newValue))
            }
        }
    }

    var isEmpty: Bool { pairs.isEmpty }

    var node: Node { .mapping(.init(pairs, XDSDecoder.implicitTag())) }
}
