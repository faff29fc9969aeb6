import Benchmark
import NIOCore
import NIOHTTP1
import OutriggerConfig
import OutriggerCore

/// Pure request-path logic, no sockets: route matching, config decoding and header rewriting.
/// Fast operations run 1,000 times per measured iteration (`scalingFactor: .kilo`); the reported time
/// and malloc counts are per call either way.
let benchmarks: @Sendable () -> Void = {
    let perCall = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 10,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 2_000
    )

    // MARK: Route matching

    let routes = RouteFixture()

    // Slow enough (a scan of every route) to measure one call per iteration.
    Benchmark(
        "RouteTable.route 1000 routes (last match)",
        configuration: .init(
            metrics: [.wallClock, .throughput, .mallocCountTotal],
            warmupIterations: 10,
            maxDuration: .seconds(2),
            maxIterations: 10_000
        )
    ) { _ in
        blackHole(routes.table.route(host: routes.host, path: RouteFixture.lastMatchPath, method: .GET, headers: routes.headers))
    }

    Benchmark("RouteTable.route 1000 routes (first match)", configuration: perCall) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(routes.table.route(host: routes.host, path: RouteFixture.firstMatchPath, method: .GET, headers: routes.headers))
        }
    }

    // MARK: Config decoding

    let yaml = ConfigFixture.yaml(endpoints: 10_000)

    Benchmark(
        "Config decode 10000 endpoints",
        configuration: .init(
            metrics: [.wallClock, .throughput, .mallocCountTotal],
            warmupIterations: 2,
            maxDuration: .seconds(5),
            maxIterations: 50
        )
    ) { benchmark in
        do {
            blackHole(try SidecarConfig.decode(yaml: yaml, file: "bench.yaml"))
        } catch {
            benchmark.error("decode failed: \(error)")
        }
    }

    // MARK: Header rewriting

    let plainRoute = HeaderFixture.route(RouteConfig(destination: .cluster("backend")))
    let mutatingRoute = HeaderFixture.route(RouteConfig(
        destination: .cluster("backend"),
        requestHeaders: HeaderMutations(
            add: [HeaderValue(name: "x-mesh-route", value: "users-api")],
            set: [HeaderValue(name: "x-env", value: "prod")],
            remove: ["cookie"]
        ),
        responseHeaders: HeaderMutations(
            set: [HeaderValue(name: "x-served-by", value: "outrigger")],
            remove: ["server"]
        )
    ))

    for (label, route) in [("", plainRoute), (" (route header mutations)", mutatingRoute)] {
        Benchmark("ProxyHeaders.prepareUpstreamRequest\(label)", configuration: perCall) { benchmark in
            // Fresh heads with their own header storage, as the decoder hands them over; built unmeasured.
            var heads = benchmark.scaledIterations.map { _ in HeaderFixture.requestHead() }
            var random = FastRandom(seed: 1)
            benchmark.startMeasurement()
            for index in benchmark.scaledIterations {
                blackHole(ProxyHeaders.prepareUpstreamRequest(
                    &heads[index], route: route, clientAddress: "10.1.2.3", scheme: "http", addVia: false, random: &random
                ))
            }
            benchmark.stopMeasurement()
            blackHole(heads)
        }

        Benchmark("ProxyHeaders.prepareDownstreamResponse\(label)", configuration: perCall) { benchmark in
            var heads = benchmark.scaledIterations.map { _ in HeaderFixture.responseHead() }
            benchmark.startMeasurement()
            for index in benchmark.scaledIterations {
                ProxyHeaders.prepareDownstreamResponse(&heads[index], route: route, upstreamServiceMilliseconds: 3, addVia: false)
            }
            benchmark.stopMeasurement()
            blackHole(heads)
        }
    }

    // MARK: Load balancing: one pick, plus the start and end a load-aware policy records per request.

    for count in [10, 1_000] {
        let set = BalancerFixture.endpoints(count)
        for policy in LoadBalancerConfig.Policy.allCases {
            Benchmark("LoadBalancer \(policy.rawValue) pick, \(count) endpoints", configuration: perCall) { benchmark in
                let hashPolicy: LoadBalancerConfig.HashPolicy? = policy.isConsistentHash ? .header("x-user") : nil
                let config = LoadBalancerConfig(policy: policy, hashPolicy: hashPolicy)
                var balancer = LoadBalancer(config)
                var loads = EndpointLoads(config)
                var random = FastRandom(seed: 1)
                var now: UInt64 = 1_000_000_000
                _ = balancer.pick(from: set, loads: loads, now: now, random: &random, hashKey: 0)  // builds rings and tables, unmeasured
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    now &+= 50_000
                    let endpoint = balancer.pick(from: set, loads: loads, now: now, random: &random, hashKey: StableHash.mix(now))!
                    loads.requestStarted(endpoint, now: now)
                    loads.responseStarted(endpoint, rtt: 400_000, now: now)
                    loads.requestEnded(endpoint)
                }
                benchmark.stopMeasurement()
            }
        }
        // What a health change, drain or slow-start step costs each event loop: a new plan (priorities,
        // zones, panic, weights), made once per change, never per request.
        Benchmark("SelectionPlan, \(count) endpoints in 2 priorities and 3 zones", configuration: perCall) { benchmark in
            let config = LoadBalancerConfig(slowStart: .init(window: .seconds(30)))
            for _ in benchmark.scaledIterations {
                blackHole(SelectionPlan(endpoints: set.endpoints, config: config, localZone: "zone-1", now: 2_000_000_000))
            }
        }
    }

    // MARK: Span export: a full batch (a server span and a try span per request) as the exporter's thread encodes it.

    let spans = SpanFixture.batch(512)
    let spanBatch = Benchmark.Configuration(metrics: [.wallClock, .throughput, .mallocCountTotal], warmupIterations: 10,
                                            maxDuration: .seconds(2), maxIterations: 2_000)
    // As the exporter does it: into the buffer the last batch grew (the first batch, unmeasured, grows it).
    Benchmark("SpanEncoding.otlp, 512 spans", configuration: spanBatch) { benchmark in
        let body = EncodingBuffer()
        blackHole(SpanEncoding.otlp(spans, resource: SpanFixture.resource, scopeName: "outrigger", scopeVersion: "0.1.0", into: body))
        benchmark.startMeasurement()
        blackHole(SpanEncoding.otlp(spans, resource: SpanFixture.resource, scopeName: "outrigger", scopeVersion: "0.1.0", into: body))
        benchmark.stopMeasurement()
    }
    Benchmark("SpanEncoding.zipkin, 512 spans", configuration: spanBatch) { _ in
        blackHole(SpanEncoding.zipkin(spans, serviceName: "web"))
    }
}

enum SpanFixture {
    static let resource = [SpanAttribute("service.name", "web"), SpanAttribute("service.instance.id", "web-1")]

    /// Half server spans, half their tries' client spans, with the attributes a proxied GET has.
    static func batch(_ count: Int) -> [SpanRecord] {
        var random = FastRandom(seed: 7)
        return (0..<count).map { index in
            let trace = TraceID(high: random.next(), low: random.next())
            let start: UInt64 = 1_764_600_000_000_000_000 + UInt64(index) * 20_000
            if index.isMultiple(of: 2) {
                let facts = ServerSpanFacts(
                    method: "GET", target: "/api/users/42?view=full", host: "users.internal", scheme: "http", protocolVersion: "1.1",
                    status: 200, listener: "inbound", route: "users", cluster: "users", reason: nil, tries: 1, requestBodyBytes: 0,
                    responseBodyBytes: 1_234, clientAddress: "10.0.3.17", requestID: "6f1c2a9e-4b1d-4c55-9a77-0e3c8d2f1b60",
                    startedAt: start, endedAt: start + 900_000)
                return SpanRecord(traceID: trace, spanID: random.next(), parentSpanID: random.next(), startUnixNanoseconds: start,
                                  endUnixNanoseconds: start + 900_000, details: .server(facts))
            }
            var ended = TrySpan(spanID: random.next(), attempt: 1, startedAt: start, endpoint: "10.0.4.21:8080", cause: nil)
            ended.status = 200
            ended.endedAt = start + 700_000
            return SpanRecord(traceID: trace, spanID: ended.spanID, parentSpanID: random.next(), startUnixNanoseconds: start + 50_000,
                              endUnixNanoseconds: start + 750_000, details: .client(ended, method: "GET", cluster: "users"))
        }
    }
}

enum BalancerFixture {
    /// `count` endpoints with weights 1, 2, 3 in turn (weighted paths, not the equal-weight shortcuts).
    static func endpoints(_ count: Int) -> EndpointSet {
        let config = ClusterConfig(name: "backend", endpoints: [HostPort(host: "127.0.0.1", port: 8080)])
        return EndpointSet((0..<count).map { index in
            do {
                let address = try SocketAddress(ipAddress: "10.0.\(index / 256).\(index % 256)", port: 8080)
                return Endpoint(configured: HostPort(host: "10.0.\(index / 256).\(index % 256)", port: 8080), address: address,
                                cluster: config,
                                metadata: EndpointMetadata(weight: index % 3 + 1, zone: "zone-\(index % 3)", priority: index % 2))
            } catch {
                fatalError("endpoint: \(error)")
            }
        })
    }
}

/// One virtual host with 1,000 routes: exact paths, prefixes limited to methods, prefixes requiring a
/// header, and plain prefixes, in turn. Only the last route matches `lastMatchPath`.
struct RouteFixture: Sendable {
    static let count = 1_000
    static let firstMatchPath: Substring = "/svc0/health"
    static let lastMatchPath: Substring = "/api/v999/orders/42"

    let table: RouteTable
    let host = "api.example.com"
    let headers = HeaderFixture.requestHeaders

    init() {
        let routes = (0..<Self.count).map { index -> RouteConfig in
            let match: RouteMatchConfig
            switch index % 4 {
            case 0: match = RouteMatchConfig(path: .exact("/svc\(index)/health"))
            case 1: match = RouteMatchConfig(path: .prefix("/svc\(index)/"), methods: ["GET", "POST"])
            case 2: match = RouteMatchConfig(path: .prefix("/svc\(index)/"), headers: [HeaderMatchConfig(name: "x-tenant", condition: .exact("blue"))])
            default: match = RouteMatchConfig(path: .prefix("/api/v\(index)/"))
            }
            return RouteConfig(name: "route-\(index)", match: match, destination: .cluster("backend"))
        }
        let virtualHost = VirtualHostConfig(name: "api", domains: ["api.example.com", "*.api.example.com"], routes: routes)
        do {
            table = try RouteTable([virtualHost], clusters: HeaderFixture.clusters)
        } catch {
            fatalError("route table: \(error)")
        }
        precondition(table.route(host: host, path: Self.lastMatchPath, method: .GET, headers: headers)?.name == "route-999")
        precondition(table.route(host: host, path: Self.firstMatchPath, method: .GET, headers: headers)?.name == "route-0")
    }
}

enum ConfigFixture {
    /// A complete `sidecar.yaml` whose one cluster lists `endpoints` distinct HOST:PORT endpoints.
    static func yaml(endpoints: Int) -> String {
        var text = """
            admin:
              address: 127.0.0.1:15000
            listeners:
              - name: outbound
                address: 127.0.0.1:15001
                routes:
                  - cluster: backend
            clusters:
              - name: backend
                connectTimeout: 250ms
                pool: {maxConnectionsPerEndpoint: 8}
                endpoints:

            """
        for index in 0..<endpoints {
            text += "      - 10.\(index / 65_536 % 256).\(index / 256 % 256).\(index % 256):8080\n"
        }
        return text
    }
}

enum HeaderFixture {
    static let clusters: [String: ClusterRuntime] = {
        let config = ClusterConfig(name: "backend", endpoints: [HostPort(host: "127.0.0.1", port: 8080)])
        do {
            let endpoint = Endpoint(configured: config.endpoints[0], address: try SocketAddress(ipAddress: "127.0.0.1", port: 8080), cluster: config)
            return ["backend": ClusterRuntime(config: config, endpoints: [endpoint], stats: ProxyStats().cluster("backend"))]
        } catch {
            fatalError("cluster: \(error)")
        }
    }()

    /// The route a one-route table picks for every request.
    static func route(_ config: RouteConfig) -> Route {
        do {
            let table = try RouteTable([VirtualHostConfig(name: "v", domains: ["*"], routes: [config])], clusters: clusters)
            guard let route = table.route(host: "x", path: "/", method: .GET, headers: [:]) else { fatalError("no route") }
            return route
        } catch {
            fatalError("route: \(error)")
        }
    }

    /// A browser-ish API request as a sidecar sees it: 12 fields, one hop-by-hop, tracing and forwarding.
    static let requestHeaders: HTTPHeaders = [
        "Host": "api.example.com",
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate, br",
        "Accept-Language": "en-US,en;q=0.9",
        "Connection": "keep-alive",
        "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl",
        "Cookie": "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark",
        "X-Forwarded-For": "203.0.113.7",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "X-Request-Id": "6f1c2a9e-3b7d-4c1e-9a52-0d8e7f4b1c23",
        "X-Tenant": "blue",
    ]

    static let responseHeaders: HTTPHeaders = [
        "Content-Type": "application/json; charset=utf-8",
        "Content-Length": "1432",
        "Date": "Wed, 26 Nov 2025 18:00:00 GMT",
        "Server": "users-api/3.2",
        "Cache-Control": "no-store",
        "Connection": "keep-alive",
        "Keep-Alive": "timeout=5",
        "Vary": "Accept-Encoding",
        "ETag": "\"33a64df551425fcc55e4d42a148795d9f25f89d4\"",
        "X-Request-Id": "6f1c2a9e-3b7d-4c1e-9a52-0d8e7f4b1c23",
    ]

    /// A request head with header storage of its own (not shared with `requestHeaders`).
    static func requestHead() -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: .GET, uri: "/api/v999/orders/42?expand=items", headers: HTTPHeaders(requestHeaders.map { ($0.name, $0.value) }))
    }

    static func responseHead() -> HTTPResponseHead {
        HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders(responseHeaders.map { ($0.name, $0.value) }))
    }
}
