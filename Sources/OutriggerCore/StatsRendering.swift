import Foundation

/// Prometheus text exposition (version 0.0.4), written family by family: the one writer every stats page
/// (`ProxyStats`, per-endpoint states, access log sinks) uses.
public struct PrometheusText {
    public private(set) var text = ""

    public init() {}

    public mutating func family(_ name: String, _ type: String, _ help: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    public mutating func sample(_ name: String, _ labels: [(String, String)], _ value: String) {
        text += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(Self.labelText(labels))} \(value)\n"
    }

    public mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Int) {
        sample(name, labels, String(value))
    }

    static func labelText(_ labels: [(String, String)]) -> String {
        labels.map { name, value in
            let escaped = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
            return "\(name)=\"\(escaped)\""
        }.joined(separator: ",")
    }
}

extension ProxyStats {
    /// The Prometheus text exposition format (version 0.0.4).
    public func prometheusText() -> String {
        var out = PrometheusText()
        func family(_ name: String, _ type: String, _ help: String) { out.family(name, type, help) }
        func sample(_ name: String, _ labels: [(String, String)], _ value: Int) { out.sample(name, labels, value) }
        let listeners = allListeners
        let clusters = allClusters

        family("outrigger_downstream_connections_total", "counter", "Downstream connections accepted.")
        for l in listeners { sample("outrigger_downstream_connections_total", [("listener", l.name)], l.connectionsTotal.current) }
        family("outrigger_downstream_connections_active", "gauge", "Downstream connections open now.")
        for l in listeners { sample("outrigger_downstream_connections_active", [("listener", l.name)], l.connectionsActive.current) }
        family("outrigger_downstream_connections_closed_total", "counter", "Downstream connections the proxy closed or refused on its own, by reason.")
        for l in listeners {
            for (reason, counter) in zip(DownstreamConnectionCloseReason.allCases, l.connectionsClosed) {
                sample("outrigger_downstream_connections_closed_total", [("listener", l.name), ("reason", reason.rawValue)], counter.current)
            }
        }
        family("outrigger_overload_level", "gauge", "The overload manager's step for each listener: 0 normal, 1 keep-alive disabled, 2 refusing requests, 3 not accepting.")
        for l in listeners { sample("outrigger_overload_level", [("listener", l.name)], l.overloadLevelValue.current) }
        family("outrigger_overload_pressure", "gauge", "Each watched resource's reading as a fraction of its limit, at the last look.")
        for (resource, pressure) in overloadPressures.withLockedValue({ $0 }) {
            out.sample("outrigger_overload_pressure", [("resource", resource)], String(format: "%.4f", pressure))
        }
        family("outrigger_overload_checks_total", "counter", "Looks the overload manager took at the process.")
        out.sample("outrigger_overload_checks_total", [], overloadChecks.current)
        family("outrigger_downstream_requests_total", "counter", "Downstream requests received (HTTP/1.1 requests and HTTP/2 streams).")
        for l in listeners { sample("outrigger_downstream_requests_total", [("listener", l.name)], l.requestsTotal.current) }
        family("outrigger_downstream_requests_active", "gauge", "Downstream requests in flight.")
        for l in listeners { sample("outrigger_downstream_requests_active", [("listener", l.name)], l.requestsActive.current) }
        family("outrigger_override_headers_malformed_total", "counter", "x-outrigger-* override headers ignored for a value that could not be used.")
        for l in listeners { sample("outrigger_override_headers_malformed_total", [("listener", l.name)], l.malformedOverrideHeaders.current) }

        family("outrigger_upstream_responses_total", "counter", "Responses received from upstream endpoints, by status class.")
        for c in clusters {
            for (index, counter) in c.responsesByClass.enumerated() {
                sample("outrigger_upstream_responses_total", [("cluster", c.name), ("code", "\(index + 1)xx")], counter.current)
            }
        }
        family("outrigger_upstream_requests_active", "gauge", "Requests in flight to a cluster.")
        for c in clusters { sample("outrigger_upstream_requests_active", [("cluster", c.name)], c.requestsActive.current) }
        family("outrigger_upstream_request_failures_total", "counter", "Upstream requests that ended in a reset, timeout or protocol error.")
        for c in clusters { sample("outrigger_upstream_request_failures_total", [("cluster", c.name)], c.requestFailures.current) }
        family("outrigger_upstream_connections_total", "counter", "Upstream connections opened.")
        for c in clusters { sample("outrigger_upstream_connections_total", [("cluster", c.name)], c.connectionsTotal.current) }
        family("outrigger_upstream_connections_active", "gauge", "Upstream connections open now.")
        for c in clusters { sample("outrigger_upstream_connections_active", [("cluster", c.name)], c.connectionsActive.current) }
        family("outrigger_upstream_connect_failures_total", "counter", "Upstream connection attempts that failed or timed out.")
        for c in clusters { sample("outrigger_upstream_connect_failures_total", [("cluster", c.name)], c.connectFailures.current) }
        family("outrigger_upstream_retries_total", "counter", "Attempts after a request's first.")
        for c in clusters { sample("outrigger_upstream_retries_total", [("cluster", c.name)], c.retries.current) }
        family("outrigger_upstream_retries_by_reason_total", "counter", "Retries by the condition that asked for them.")
        for c in clusters {
            for (reason, counter) in c.retriesByReason.sorted(by: { $0.key < $1.key }) {
                sample("outrigger_upstream_retries_by_reason_total", [("cluster", c.name), ("reason", reason)], counter.current)
            }
        }
        family("outrigger_retry_budget_exhausted_total", "counter", "Retries refused because the cluster's retry budget was spent.")
        for c in clusters { sample("outrigger_retry_budget_exhausted_total", [("cluster", c.name)], c.retryBudgetExhausted.current) }
        family("outrigger_upstream_retries_active", "gauge", "Retries in flight.")
        for c in clusters { sample("outrigger_upstream_retries_active", [("cluster", c.name)], c.activeRetries.current) }
        family("outrigger_overflow_total", "counter", "Requests or retries turned away by a cluster limit.")
        for c in clusters {
            sample("outrigger_overflow_total", [("cluster", c.name), ("limit", "maxRequests")], c.overflowMaxRequests.current)
            sample("outrigger_overflow_total", [("cluster", c.name), ("limit", "maxActiveRetries")], c.overflowMaxActiveRetries.current)
            sample("outrigger_overflow_total", [("cluster", c.name), ("limit", "maxConnections")], c.overflowMaxConnections.current)
            sample("outrigger_overflow_total", [("cluster", c.name), ("limit", "maxPendingRequests")], c.overflowMaxPendingRequests.current)
        }
        family("outrigger_upstream_requests_pending", "gauge", "Requests waiting for an upstream connection.")
        for c in clusters { sample("outrigger_upstream_requests_pending", [("cluster", c.name)], c.pendingRequests.current) }
        family("outrigger_breaker_transitions_total", "counter", "Endpoint circuit breakers opened or closed.")
        for c in clusters {
            sample("outrigger_breaker_transitions_total", [("cluster", c.name), ("to", "open")], c.breakersOpened.current)
            sample("outrigger_breaker_transitions_total", [("cluster", c.name), ("to", "closed")], c.breakersClosed.current)
        }
        family("outrigger_outlier_ejections_total", "counter", "Endpoints ejected by outlier detection (result=ejected), or not for the max ejection percent (result=prevented).")
        for c in clusters {
            sample("outrigger_outlier_ejections_total", [("cluster", c.name), ("result", "ejected")], c.outlierEjections.current)
            sample("outrigger_outlier_ejections_total", [("cluster", c.name), ("result", "prevented")], c.outlierEjectionsPrevented.current)
        }
        family("outrigger_lb_panic_mode", "gauge", "1 while a priority level has fewer healthy endpoints than the panic threshold (all are used).")
        for c in clusters { sample("outrigger_lb_panic_mode", [("cluster", c.name)], c.panicMode.load(ordering: .relaxed) ? 1 : 0) }
        family("outrigger_health_checks_total", "counter", "Active health checks, by result.")
        for c in clusters {
            sample("outrigger_health_checks_total", [("cluster", c.name), ("result", "passed")], c.healthChecksPassed.current)
            sample("outrigger_health_checks_total", [("cluster", c.name), ("result", "failed")], c.healthChecksFailed.current)
        }
        family("outrigger_endpoint_health_transitions_total", "counter", "Endpoints marked unhealthy or healthy again by health checks.")
        for c in clusters {
            sample("outrigger_endpoint_health_transitions_total", [("cluster", c.name), ("to", "unhealthy")], c.endpointsMarkedUnhealthy.current)
            sample("outrigger_endpoint_health_transitions_total", [("cluster", c.name), ("to", "healthy")], c.endpointsMarkedHealthy.current)
        }
        family("outrigger_endpoint_drains_total", "counter", "Drains started by an endpoint's x-outrigger-drain answer or an admin call.")
        for c in clusters { sample("outrigger_endpoint_drains_total", [("cluster", c.name)], c.endpointDrains.current) }

        family("outrigger_local_replies_total", "counter", "Responses the proxy wrote itself, by x-outrigger-reason.")
        for reason in LocalReplyReason.allCases {
            sample("outrigger_local_replies_total", [("reason", reason.rawValue)], localReplyCount(reason))
        }
        family("outrigger_config_reloads_total", "counter", "Config reloads, by result.")
        sample("outrigger_config_reloads_total", [("result", "success")], configReloadSuccesses.current)
        sample("outrigger_config_reloads_total", [("result", "failure")], configReloadFailures.current)

        func histogram(_ name: String, _ labels: [(String, String)], _ histogram: LatencyHistogram) {
            let snapshot = histogram.snapshot()
            for (index, bound) in LatencyHistogram.prometheusBounds.enumerated() {
                sample(name + "_bucket", labels + [("le", Self.number(bound))], snapshot.cumulativeBuckets[index])
            }
            sample(name + "_bucket", labels + [("le", "+Inf")], snapshot.count)
            out.sample(name + "_sum", labels, Self.number(snapshot.sumSeconds))
            sample(name + "_count", labels, snapshot.count)
        }
        family("outrigger_request_duration_seconds", "histogram", "Downstream request duration, head received to response end.")
        for l in listeners { histogram("outrigger_request_duration_seconds", [("listener", l.name)], l.requestDuration) }
        family("outrigger_cluster_request_duration_seconds", "histogram", "Routed request duration by cluster, head received to response end.")
        for c in clusters { histogram("outrigger_cluster_request_duration_seconds", [("cluster", c.name)], c.requestDuration) }
        family("outrigger_cluster_upstream_response_seconds", "histogram",
               "From the request's start to the upstream's response head, by cluster (retries and backoff included).")
        for c in clusters { histogram("outrigger_cluster_upstream_response_seconds", [("cluster", c.name)], c.upstreamResponseTime) }
        family("outrigger_cluster_try_duration_seconds", "histogram", "Each try to the cluster, from its start to its end (answered, failed, or given up).")
        for c in clusters { histogram("outrigger_cluster_try_duration_seconds", [("cluster", c.name)], c.tryDuration) }
        let routes = allRoutes
        family("outrigger_route_server_errors_total", "counter", "Requests the route took that were answered 5xx (relayed or local).")
        for r in routes { sample("outrigger_route_server_errors_total", [("listener", r.listener), ("route", r.name)], r.serverErrors.current) }
        family("outrigger_route_request_duration_seconds", "histogram", "Request duration by route, head received to response end.")
        for r in routes { histogram("outrigger_route_request_duration_seconds", [("listener", r.listener), ("route", r.name)], r.requestDuration) }
        family("outrigger_route_upstream_response_seconds", "histogram", "From the request's start to the upstream's response head, by route.")
        for r in routes { histogram("outrigger_route_upstream_response_seconds", [("listener", r.listener), ("route", r.name)], r.upstreamResponseTime) }
        return out.text
    }

    /// The same numbers as JSON-ready dictionaries, with latency percentiles.
    public func jsonObject() -> [String: Any] {
        let listeners: [[String: Any]] = allListeners.map { l in
            [
                "name": l.name,
                "connections_total": l.connectionsTotal.current,
                "connections_active": l.connectionsActive.current,
                "requests_total": l.requestsTotal.current,
                "requests_active": l.requestsActive.current,
                "override_headers_malformed": l.malformedOverrideHeaders.current,
                "connections_closed": Dictionary(uniqueKeysWithValues: zip(DownstreamConnectionCloseReason.allCases.map(\.rawValue), l.connectionsClosed.map(\.current))),
                "overload_level": l.overloadLevel.name,
                "request_duration_ms": Self.percentiles(l.requestDuration),
            ]
        }
        let clusters: [[String: Any]] = allClusters.map { c in
            var responses: [String: Int] = [:]
            for (index, counter) in c.responsesByClass.enumerated() { responses["\(index + 1)xx"] = counter.current }
            return [
                "name": c.name,
                "responses": responses,
                "requests_active": c.requestsActive.current,
                "request_failures": c.requestFailures.current,
                "connections_total": c.connectionsTotal.current,
                "connections_active": c.connectionsActive.current,
                "connect_failures": c.connectFailures.current,
                "lb_panic_mode": c.panicMode.load(ordering: .relaxed),
                "retries": c.retries.current,
                "retries_by_reason": c.retriesByReason.mapValues(\.current),
                "retry_budget_exhausted": c.retryBudgetExhausted.current,
                "outlier_ejections": c.outlierEjections.current,
                "retries_active": c.activeRetries.current,
                "breakers_opened": c.breakersOpened.current,
                "breakers_closed": c.breakersClosed.current,
                "overflow_max_requests": c.overflowMaxRequests.current,
                "overflow_max_active_retries": c.overflowMaxActiveRetries.current,
                "overflow_max_connections": c.overflowMaxConnections.current,
                "overflow_max_pending_requests": c.overflowMaxPendingRequests.current,
                "requests_pending": c.pendingRequests.current,
                "outlier_ejections_prevented": c.outlierEjectionsPrevented.current,
                "health_checks_passed": c.healthChecksPassed.current,
                "health_checks_failed": c.healthChecksFailed.current,
                "endpoints_marked_unhealthy": c.endpointsMarkedUnhealthy.current,
                "endpoints_marked_healthy": c.endpointsMarkedHealthy.current,
                "endpoint_drains": c.endpointDrains.current,
                "request_duration_ms": Self.percentiles(c.requestDuration),
                "upstream_response_ms": Self.percentiles(c.upstreamResponseTime),
                "try_duration_ms": Self.percentiles(c.tryDuration),
            ]
        }
        var localReplies: [String: Int] = [:]
        for reason in LocalReplyReason.allCases { localReplies[reason.rawValue] = localReplyCount(reason) }
        let routes: [[String: Any]] = allRoutes.map { r in
            ["listener": r.listener, "name": r.name, "request_duration_ms": Self.percentiles(r.requestDuration),
             "upstream_response_ms": Self.percentiles(r.upstreamResponseTime), "server_errors": r.serverErrors.current]
        }
        return [
            "listeners": listeners,
            "clusters": clusters,
            "routes": routes,
            "local_replies": localReplies,
            "config_reloads": ["success": configReloadSuccesses.current, "failure": configReloadFailures.current],
            "overload_pressure": Dictionary(overloadPressures.withLockedValue { $0 }.map { ($0.resource, $0.pressure) }, uniquingKeysWith: { $1 }),
        ]
    }

    /// A histogram's count and p50/p90/p99/p99.9 in milliseconds, for `/stats`.
    static func percentiles(_ histogram: LatencyHistogram) -> [String: Any] {
        let snapshot = histogram.snapshot()
        return [
            "count": snapshot.count,
            "p50": snapshot.quantile(0.5) * 1000,
            "p90": snapshot.quantile(0.9) * 1000,
            "p99": snapshot.quantile(0.99) * 1000,
            "p99_9": snapshot.quantile(0.999) * 1000,
        ]
    }

    /// The per-endpoint families, read from the running clusters' endpoint states (which live with the
    /// endpoints, not in `ProxyStats`), in Prometheus text.
    public static func endpointPrometheusText(_ clusters: [ClusterRuntime], now: UInt64) -> String {
        var out = PrometheusText()
        let families: [(name: String, type: String, help: String, value: (Endpoint) -> Int)] = [
            ("outrigger_endpoint_attempts_total", "counter", "Tries sent to the endpoint (first tries, retries and hedges).",
             { $0.state.attempts.current }),
            ("outrigger_endpoint_failures_total", "counter", "The endpoint's tries that failed: a 5xx answer, or none (connect failure, reset, timeout).",
             { $0.state.failures.current }),
            ("outrigger_endpoint_requests_active", "gauge", "Requests in flight to the endpoint.", { max($0.state.activeRequests.current, 0) }),
            ("outrigger_endpoint_healthy", "gauge", "0 while active health checks hold the endpoint unhealthy, else 1.",
             { $0.state.health == .unhealthy ? 0 : 1 }),
            ("outrigger_endpoint_ejected", "gauge", "1 while outlier detection has the endpoint ejected.", { $0.state.isEjected(now: now) ? 1 : 0 }),
            ("outrigger_endpoint_breaker_open", "gauge", "1 while the endpoint's circuit breaker is open (half-open probes not yet due).",
             { now < $0.state.breakerOpenUntil ? 1 : 0 }),
        ]
        for family in families {
            out.family(family.name, family.type, family.help)
            for cluster in clusters {
                for endpoint in cluster.endpoints {
                    out.sample(family.name, [("cluster", cluster.name), ("endpoint", endpoint.addressText)], family.value(endpoint))
                }
            }
        }
        // What alert rules compare latency with (config/alerts.yaml: p99 above half the timeout).
        out.family("outrigger_cluster_timeout_seconds", "gauge", "The cluster's request timeout (routes without one of their own use it).")
        for cluster in clusters {
            out.sample("outrigger_cluster_timeout_seconds", [("cluster", cluster.name)], number(Double(cluster.timeout.nanoseconds) / 1e9))
        }
        out.family("outrigger_outlier_ejections_active", "gauge", "Endpoints ejected by outlier detection now.")
        for cluster in clusters {
            out.sample("outrigger_outlier_ejections_active", [("cluster", cluster.name)], cluster.endpoints.filter { $0.state.isEjected(now: now) }.count)
        }
        return out.text
    }

    private static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}
