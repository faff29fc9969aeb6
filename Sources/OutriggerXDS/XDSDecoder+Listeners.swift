import Foundation
import OutriggerConfig
import SwiftProtobuf
import Yams

/// Listeners and their routes: Envoy's Listener, HttpConnectionManager and RouteConfiguration into the
/// config's listener keys.
extension XDSDecoder {
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
        // No tracing block: Envoy would not trace, and the sidecar passes the headers on untouched. With one, it joins
        // traces and samples roots at random_sampling (Envoy's default: 100 %).
        let tracing = Document()
        if manager.hasTracing {
            let percent = manager.tracing.hasRandomSampling ? manager.tracing.randomSampling.value : 100
            guard percent.isFinite, (0...100).contains(percent) else {
                throw refuse("http_connection_manager.tracing.random_sampling: expected a percentage from 0 to 100, found \(percent)")
            }
            tracing["mode"] = string(TracingConfig.Mode.participate.rawValue)
            tracing["sampleRatio"] = string("\(percent)%")
        } else {
            tracing["mode"] = string(TracingConfig.Mode.forward.rawValue)
        }
        document["tracing"] = tracing.node
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
                header["exact"] = string(value)
            case .prefixMatch(let value) where !matcher.invertMatch:
                header["prefix"] = string(value)
            case .stringMatch(let string) where !matcher.invertMatch && !string.ignoreCase:
                switch string.matchPattern {
                case .exact(let value): header["exact"] = self.string(value)
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
                for header in response.headers { headers[header.name] = string(header.value) }
                fallback["headers"] = headers.node
            }
            fallback["body"] = string(response.body)
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
                (appends && option.appendAction == .appendIfExistsOrAdd ? appended : replaced)[option.header.key] = string(option.header.value)
            default:
                throw refuse("append_action \(option.appendAction) of '\(option.header.key)' is not implemented")
            }
        }
        if !appended.isEmpty { mutations["add"] = appended.node }
        if !replaced.isEmpty { mutations["set"] = replaced.node }
        if !remove.isEmpty { mutations["remove"] = sequence(remove.map(string)) }
        return mutations.node
    }
}
