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

/// A small HTTP/1.1 server for admin pages: each request's head is answered by `respond` with a status, a
/// content type and a body (bodies of requests are ignored). Used by the sidecar's and the control plane's admin.
/// Under the same defences as a listener: at most `maxConnections` open (more are closed at once), a request
/// head within 10 s of its first byte (→ 408), an idle connection closed after a minute, and accepting paused
/// while the process is out of file descriptors.
public enum PlainHTTPServer {
    public typealias Respond = @Sendable (HTTPRequestHead) -> (HTTPResponseStatus, String, String)

    public static let maxConnections = 64
    public static let requestHeadersTimeout: Duration = .seconds(10)
    public static let idleTimeout: Duration = .seconds(60)

    public static func bind(to address: SocketAddress, group: any EventLoopGroup, respond: @escaping Respond) async throws -> Channel {
        let open = Gauge()
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer(AcceptPause.install)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard open.increment(below: maxConnections) else {
                        channel.close(promise: nil)
                        return
                    }
                    channel.closeFuture.whenComplete { _ in open.decrement() }
                    let timeouts = DownstreamTimeoutWatcher(requestHeadersTimeout: requestHeadersTimeout, idleTimeout: idleTimeout, stats: nil)
                    try channel.pipeline.syncOperations.addHandler(timeouts)
                    // Each request is answered as its end is read, so pipelined ones stay in order without NIO's
                    // pipelining handler (which would also refuse the 408 written with no request in flight).
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(PlainHTTPHandler(respond: respond, timeouts: timeouts))
                }
            }
            .bind(to: address)
            .get()
    }

    /// The path of a request target, without its query.
    public static func path(of uri: String) -> String { String(ProxyHeaders.path(of: uri)) }

    /// Pretty JSON with sorted keys, and a final newline.
    public static func json(_ object: Any) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]) else { return "{}" }
        return (String(data: data, encoding: .utf8) ?? "{}") + "\n"
    }
}

/// What another component adds to a sidecar's admin pages (`Sidecar.setAdminExtension`).
public struct AdminExtension: Sendable {
    /// Appended to `/stats/prometheus`.
    public var prometheusText: String
    /// A key and a JSON value added to `/config_dump`'s top-level object.
    public var configDumpKey: String
    public var configDumpJSON: String

    public init(prometheusText: String, configDumpKey: String, configDumpJSON: String) {
        self.prometheusText = prometheusText
        self.configDumpKey = configDumpKey
        self.configDumpJSON = configDumpJSON
    }
}

/// What the admin endpoints read from the running sidecar.
struct SidecarState: Sendable {
    let configStore: ConfigStore
    let accessLogs: AccessLogSinks
    let spans: SpanExporter
    let isDraining: @Sendable () -> Bool
    let extensions: @Sendable () -> AdminExtension?
    let mutationGuard: AdminMutationGuard

    /// Access log destinations' losses, in Prometheus text.
    func accessLogPrometheusText() -> String {
        let sinks = accessLogs.all.sorted { $0.path < $1.path }
        var out = PrometheusText()
        for (name, help, value) in [
            ("outrigger_access_log_dropped_lines_total", "Access log lines dropped (the writer fell 8 MiB behind, or a write failed).", \AccessLogSink.droppedLines),
            ("outrigger_access_log_write_errors_total", "Access log writes that failed.", \AccessLogSink.writeErrors),
        ] {
            out.family(name, "counter", help)
            for sink in sinks { out.sample(name, [("path", sink.path)], sink[keyPath: value]) }
        }
        return out.text
    }

    /// The span exporter's figures, in Prometheus text.
    func spanPrometheusText() -> String {
        var out = PrometheusText()
        out.family("outrigger_trace_spans_total", "counter", "Spans of sampled requests by what became of them: recorded (ended), exported (the collector took them), dropped (the export queue was full), failed (the collector refused their batch, or it failed five times).")
        for (outcome, value) in [("recorded", spans.recorded), ("exported", spans.exported), ("dropped", spans.dropped), ("failed", spans.failed)] {
            out.sample("outrigger_trace_spans_total", [("outcome", outcome)], value)
        }
        out.family("outrigger_trace_export_requests_total", "counter", "Requests to the trace collector by result (failed: no 2xx answer).")
        out.sample("outrigger_trace_export_requests_total", [("result", "ok")], spans.exportRequestsSucceeded)
        out.sample("outrigger_trace_export_requests_total", [("result", "failed")], spans.exportRequestsFailed)
        out.family("outrigger_trace_spans_queued", "gauge", "Spans waiting to be sent to the trace collector.")
        out.sample("outrigger_trace_spans_queued", [], spans.queued)
        return out.text
    }

    /// `/stats`' `tracing` object.
    func spanStatsObject() -> [String: Any] {
        ["exporting": spans.isExporting, "recorded": spans.recorded, "exported": spans.exported, "dropped": spans.dropped,
         "failed": spans.failed, "queued": spans.queued,
         "export_requests": ["ok": spans.exportRequestsSucceeded, "failed": spans.exportRequestsFailed]]
    }
}

private final class PlainHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let respond: PlainHTTPServer.Respond
    private let timeouts: DownstreamTimeoutWatcher
    private var head: HTTPRequestHead?

    init(respond: @escaping PlainHTTPServer.Respond, timeouts: DownstreamTimeoutWatcher) {
        self.respond = respond
        self.timeouts = timeouts
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is RequestHeadersTimedOut else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        var headers = HTTPHeaders()
        headers.add(name: "content-length", value: "0")
        headers.add(name: "connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .requestTimeout, headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            timeouts.headReceived()
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let (status, contentType, body) = respond(head)
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: contentType)
            headers.add(name: "content-length", value: String(body.utf8.count))
            headers.add(name: "cache-control", value: "no-store")
            if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            if head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            }
            let keepAlive = head.isKeepAlive
            timeouts.responseEnded()
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                if !keepAlive { context.close(promise: nil) }
            }
        }
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
