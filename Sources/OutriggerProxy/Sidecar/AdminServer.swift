import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import OutriggerCore

/// The admin listener (127.0.0.1 by default): health, stats and the running config. Off the hot path.
final class AdminServer: Sendable {
    private let sidecar: SidecarState

    init(sidecar: SidecarState) {
        self.sidecar = sidecar
    }

    func bind(to address: SocketAddress, group: any EventLoopGroup) async throws -> Channel {
        let endpoints = AdminEndpoints(sidecar: sidecar)
        return try await PlainHTTPServer.bind(to: address, group: group) { endpoints.respond(to: $0) }
    }
}

/// The sidecar's admin pages.
private struct AdminEndpoints: Sendable {
    let sidecar: SidecarState

    func respond(to head: HTTPRequestHead) -> (HTTPResponseStatus, String, String) {
        let path = String(ProxyHeaders.path(of: head.uri))
        let readOnly: Set<String> = ["/", "/ready", "/live", "/stats", "/stats/prometheus", "/config_dump", "/clusters", "/traces", "/dashboard",
                                       "/dashboard/data"]
        let mutating: Set<String> = ["/endpoints/drain", "/endpoints/undrain"]
        if mutating.contains(path) {
            guard head.method == .POST else { return (.methodNotAllowed, "text/plain", "\(path) takes POST\n") }
            if let refusal = sidecar.mutationGuard.check(head.headers) {
                return (refusal.status, "text/plain", refusal.explanation + "\n")
            }
            return setDrain(path == "/endpoints/drain", query: URLComponents(string: head.uri)?.queryItems ?? [])
        }
        guard readOnly.contains(path) else {
            return (.notFound, "text/plain", "unknown admin path \(path); try /\n")
        }
        guard head.method == .GET || head.method == .HEAD else {
            return (.methodNotAllowed, "text/plain", "\(path) takes GET\n")
        }
        switch path {
        case "/ready":
            return sidecar.isDraining() ? (.serviceUnavailable, "text/plain", "draining\n") : (.ok, "text/plain", "ready\n")
        case "/live":
            return (.ok, "text/plain", "live\n")
        case "/stats":
            var stats = sidecar.configStore.stats.jsonObject()
            stats["access_logs"] = Dictionary(uniqueKeysWithValues: sidecar.accessLogs.all.map {
                ($0.path, ["dropped_lines": $0.droppedLines, "dropped_bytes": $0.droppedBytes, "write_errors": $0.writeErrors])
            })
            stats["tracing"] = sidecar.spanStatsObject()
            return (.ok, "application/json", json(stats))
        case "/stats/prometheus":
            let clusters = sidecar.configStore.snapshot.clusters.values.sorted { $0.name < $1.name }
            let endpoints = ProxyStats.endpointPrometheusText(clusters, now: NIODeadline.now().uptimeNanoseconds)
            let extra = sidecar.extensions()?.prometheusText ?? ""
            return (.ok, "text/plain; version=0.0.4", sidecar.configStore.stats.prometheusText() + endpoints + sidecar.accessLogPrometheusText()
                    + sidecar.spanPrometheusText() + extra)
        case "/config_dump":
            let snapshot = sidecar.configStore.snapshot
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let config = (try? encoder.encode(snapshot.config)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
            let extra = sidecar.extensions().map { ",\n\"\($0.configDumpKey)\": \($0.configDumpJSON)" } ?? ""
            return (.ok, "application/json", "{\n\"version\": \(snapshot.version),\n\"config\": \(config)\(extra)\n}\n")
        case "/clusters":
            return (.ok, "application/json", json(clustersObject()))
        case "/dashboard":
            return (.ok, "text/html; charset=utf-8", DashboardPage.html)
        case "/dashboard/data":
            return (.ok, "application/json", json(dashboardData()))
        case "/traces":
            let trace = URLComponents(string: head.uri)?.queryItems?.first { $0.name == "trace" }?.value?.lowercased()
            return (.ok, "application/json", json(tracesObject(trace: trace)))
        default:
            let index = (readOnly.sorted().filter { $0 != "/" }.map { "  GET \($0)" }
                + mutating.sorted().map { "  POST \($0)?cluster=NAME&endpoint=HOST:PORT" }).joined(separator: "\n")
            return (.ok, "text/plain", "outrigger admin\n\(index)\n")
        }
    }

    /// Every cluster and endpoint as the balancers see them now.
    private func clustersObject() -> [String: Any] {
        let snapshot = sidecar.configStore.snapshot
        let now = NIODeadline.now().uptimeNanoseconds
        var clusters: [[String: Any]] = []
        for cluster in snapshot.clusters.values.sorted(by: { $0.name < $1.name }) {
            let endpoints: [[String: Any]] = cluster.endpoints.map { endpoint in
                let state = endpoint.state
                var object: [String: Any] = [
                    "address": endpoint.description,
                    "health": state.health.description,
                    "draining": state.isDraining(now: now),
                    "ejected": state.isEjected(now: now),
                    "timesEjected": state.timesEjected.load(ordering: .relaxed),
                    "breaker": state.breakerState.map { breaker -> String in
                        switch breaker {
                        case .closed: "closed"
                        case .open: "open"
                        case .halfOpen: "half_open"
                        }
                    } ?? "closed",
                    "eligible": state.isEligible(now: now),
                    "weight": endpoint.weight,
                    "priority": endpoint.priority,
                    "activeRequests": max(state.activeRequests.current, 0),
                    "attempts": state.attempts.current,
                    "healthChecks": ["passed": state.healthChecksPassed.current, "failed": state.healthChecksFailed.current],
                ]
                object["zone"] = endpoint.zone ?? NSNull()
                object["latencyEstimateMs"] = state.latencyEstimate > 0 ? Double(state.latencyEstimate) / 1_000_000 : NSNull()
                // During its slow start, the share of its weight the endpoint gets now (a percentage).
                let slowStart = cluster.config.loadBalancer.slowStart.flatMap { SelectionPlan.slowStartFactor(readySince: state.readySince, now: now, $0) }
                object["slowStartPercent"] = slowStart.map { Int(($0 * 100).rounded()) } ?? NSNull()
                return object
            }
            var object: [String: Any] = [
                "name": cluster.name,
                "policy": cluster.config.loadBalancer.policy.rawValue,
                "panicMode": cluster.stats.panicMode.load(ordering: .relaxed),
                "panicThreshold": cluster.config.loadBalancer.panicThreshold,
                "endpoints": endpoints,
            ]
            object["healthCheck"] = cluster.config.healthCheck?.kind.rawValue ?? NSNull()
            clusters.append(object)
        }
        return ["clusters": clusters, "zone": snapshot.config.zone ?? NSNull()]
    }

    /// What `/dashboard` polls: the stats, the clusters and endpoints as `/clusters` shows them, each cluster's
    /// cumulative latency buckets (the page diffs them for recent quantiles), the config version, the control plane's
    /// status and the spans' figures.
    private func dashboardData() -> [String: Any] {
        let snapshot = sidecar.configStore.snapshot
        var buckets: [String: [Int]] = [:]
        for cluster in snapshot.clusters.values { buckets[cluster.name] = cluster.stats.requestDuration.snapshot().cumulativeBuckets }
        // The running routes' (by listener, in table order), each with its latency buckets.
        var routes: [[String: Any]] = []
        for listener in snapshot.listeners.values.sorted(by: { $0.config.name < $1.config.name }) {
            for route in listener.routes.allRoutes {
                routes.append(["listener": listener.config.name, "name": route.name,
                               "buckets": route.stats.requestDuration.snapshot().cumulativeBuckets, "errors": route.stats.serverErrors.current])
            }
        }
        let controlPlane = sidecar.extensions().flatMap { try? JSONSerialization.jsonObject(with: Data($0.configDumpJSON.utf8)) }
        return [
            "now": WallClock.milliseconds(),
            "version": snapshot.version,
            "stats": sidecar.configStore.stats.jsonObject(),
            "clusters": clustersObject()["clusters"] ?? [],
            "latency": ["bounds": LatencyHistogram.prometheusBounds, "clusters": buckets],
            "routes": routes,
            "controlPlane": controlPlane ?? NSNull(),
            "tracing": sidecar.spanStatsObject(),
        ]
    }

    /// The last spans ended, newest first (`?trace=ID`: that trace's only).
    private func tracesObject(trace: String?) -> [String: Any] {
        let spans = sidecar.spans.recentSpans.filter { trace == nil || $0.traceID.hex == trace }
        let objects: [[String: Any]] = spans.map { span in
            var object: [String: Any] = [
                "traceId": span.traceID.hex, "spanId": TraceHex.string(span.spanID), "kind": span.kind.rawValue, "name": span.name,
                "startUnixNano": span.startUnixNanoseconds, "durationMicros": span.durationNanoseconds / 1000,
                "attributes": Dictionary(span.attributes.map { attribute -> (String, Any) in
                    switch attribute.value {
                    case .string(let text): (attribute.key, text)
                    case .int(let number): (attribute.key, number)
                    }
                }) { first, _ in first },
            ]
            object["parentSpanId"] = span.parentSpanID == 0 ? NSNull() : TraceHex.string(span.parentSpanID)
            object["error"] = span.error ?? NSNull()
            return object
        }
        return ["spans": objects, "kept": SpanExporter.recentCapacity]
    }

    /// `POST /endpoints/drain?cluster=C&endpoint=HOST:PORT`: no new requests for it until undrained.
    private func setDrain(_ drain: Bool, query: [URLQueryItem]) -> (HTTPResponseStatus, String, String) {
        let value = { (name: String) in query.first { $0.name == name }?.value }
        guard let clusterName = value("cluster"), let address = value("endpoint") else {
            return (.badRequest, "text/plain", "expected ?cluster=NAME&endpoint=HOST:PORT\n")
        }
        guard let cluster = sidecar.configStore.snapshot.clusters[clusterName] else {
            return (.notFound, "text/plain", "no cluster '\(clusterName)'\n")
        }
        let matches = cluster.endpoints.filter { endpoint in
            endpoint.configured.description == address || "\(endpoint.address.ipAddress ?? ""):\(endpoint.configured.port)" == address
        }
        guard !matches.isEmpty else {
            return (.notFound, "text/plain", "cluster '\(clusterName)' has no endpoint '\(address)'; it has \(cluster.endpoints.map(\.description))\n")
        }
        let now = NIODeadline.now().uptimeNanoseconds
        for endpoint in matches {
            if drain { EndpointDrain.start(endpoint, in: cluster, until: .max) } else { endpoint.state.undrain(now: now) }
        }
        return (.ok, "text/plain", "\(drain ? "draining" : "undrained") \(matches.map(\.description).joined(separator: ", ")) in \(clusterName)\n")
    }

    private func json(_ object: Any) -> String { PlainHTTPServer.json(object) }
}
