import Foundation
import OutriggerConfig
import OutriggerProxy
import Testing

/// A span as `Scripts/trace_receiver.py` received and decoded it (OTLP with opentelemetry-proto, or Zipkin JSON).
struct ReceivedSpan {
    let fields: [String: Any]

    init?(line: Substring) {
        guard line.hasPrefix("span "), let data = line.dropFirst(5).data(using: .utf8),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        fields = object
    }

    var service: String? { fields["service"] as? String }
    var traceID: String? { fields["traceId"] as? String }
    var spanID: String? { fields["spanId"] as? String }
    var parentSpanID: String? { fields["parentSpanId"] as? String }
    var kind: String? { fields["kind"] as? String }
    var name: String? { fields["name"] as? String }
    var error: String? { fields["error"] as? String }
    var start: Int { fields["start"] as? Int ?? 0 }
    var end: Int { fields["end"] as? Int ?? 0 }
    func attribute(_ key: String) -> String? {
        (fields["attributes"] as? [String: Any])?[key].map { "\($0)" }
    }
}

/// The test collector, and the spans it has printed so far.
struct TraceCollector {
    let process: ChildProcess
    let port: Int

    static func start(refusing: Int = 0, closingEachConnection: Bool = false) async throws -> TraceCollector {
        let (process, port) = try await startScriptServer("trace_receiver.py", (refusing > 0 ? ["--refuse", String(refusing)] : [])
                                                          + (closingEachConnection ? ["--close"] : []))
        return TraceCollector(process: process, port: port)
    }

    func export(service: String, format: TraceExportConfig.Format = .otlp) -> TraceExportConfig {
        TraceExportConfig(format: format, address: HostPort(host: "127.0.0.1", port: port), serviceName: service)
    }

    /// Waits until `count` spans have arrived, and returns every span received.
    func spans(count: Int) async throws -> [ReceivedSpan] {
        try await process.waitForOutput(containing: "span {", count: count)
        return process.text.split(separator: "\n").compactMap { ReceivedSpan(line: $0) }
    }
}

@Suite("Spans exported to a collector, end to end")
struct SpanExportTests {
    /// A one-listener config to `endpoints`, sampling every request, exporting to `export`.
    static func config(_ endpoints: [HostPort], export: TraceExportConfig?, direction: ListenerConfig.Direction = .inbound,
                       retries: RetryPolicy = .none) -> SidecarConfig {
        var config = Harness.config(routes: [RouteConfig(destination: .cluster("upstream"), retries: retries)],
                                    clusters: [ClusterConfig(name: "upstream", endpoints: endpoints)]) { listener in
            listener.tracing = TracingConfig(sampleRatio: 1)
            listener.direction = direction
        }
        config.traceExport = export
        return config
    }

    /// A's outbound listener to B's inbound one to an echo: one trace, whose span tree the collector receives from
    /// both sidecars — A's server span (the root), A's try, B's server span under A's try, B's try.
    @Test func twoSidecarsInAChainReportOneTraceAsATreeOfSpans() async throws {
        let collector = try await TraceCollector.start()
        defer { collector.process.kill() }
        try await withHarness(echoes: 1) { endpoints in
            Self.config(endpoints, export: collector.export(service: "orders"))
        } _: { (b: Harness) async throws in
            let a = try await Sidecar.start(config: Self.config([HostPort(host: "127.0.0.1", port: b.port)], export: collector.export(service: "web"),
                                                                direction: .outbound), logger: Harness.quietLogger)
            do {
                let response = try await fetch("http://127.0.0.1:\(a.listenerAddresses["main"]!.port!)/chain?x=1", ["-H", "x-request-id: chain-1"])
                #expect(response.status == 200)
                let spans = try await collector.spans(count: 4)
                #expect(spans.count == 4)
                #expect(Set(spans.compactMap(\.traceID)).count == 1, "one trace end to end")
                let aServer = try #require(spans.first { $0.service == "web" && $0.kind == "server" })
                let aTry = try #require(spans.first { $0.service == "web" && $0.kind == "client" })
                let bServer = try #require(spans.first { $0.service == "orders" && $0.kind == "server" })
                let bTry = try #require(spans.first { $0.service == "orders" && $0.kind == "client" })
                #expect(aServer.parentSpanID == nil, "A started the trace")
                #expect(aTry.parentSpanID == aServer.spanID)
                #expect(bServer.parentSpanID == aTry.spanID, "B joined A's try")
                #expect(bTry.parentSpanID == bServer.spanID)
                #expect(Set(spans.compactMap(\.spanID)).count == 4)
                // What each says, in OpenTelemetry's HTTP conventions and ours.
                #expect(aServer.name == "GET all/0" && aServer.attribute("http.request.method") == "GET")
                #expect(aServer.attribute("url.path") == "/chain")
                #expect(aServer.attribute("http.response.status_code") == "200")
                #expect(aServer.attribute("outrigger.request_id") == "chain-1")
                #expect(bServer.attribute("outrigger.request_id") == "chain-1", "x-request-id travels with the trace")
                #expect(aTry.attribute("outrigger.cluster") == "upstream" && aTry.attribute("outrigger.attempt") == "1")
                #expect(aTry.attribute("server.port") == String(b.port))
                #expect(bTry.attribute("http.response.status_code") == "200")
                #expect(spans.allSatisfy { $0.error == nil })
                // Nested in time as in the tree.
                #expect(aServer.start <= aTry.start && aTry.start <= bServer.start && bTry.end <= bServer.end && bServer.end <= aTry.end
                        && aTry.end <= aServer.end)
                let now = Int(Date().timeIntervalSince1970 * 1e9)
                #expect(abs(aServer.start - now) < 60_000_000_000, "Unix time in nanoseconds")
            } catch {
                await a.shutdown()
                throw error
            }
            await a.shutdown()
        }
    }

    /// A request answered before any route took it is a server span of its own, with the reason and no try.
    @Test func aRequestAnsweredBeforeRoutingIsASpanWithItsReason() async throws {
        let collector = try await TraceCollector.start()
        defer { collector.process.kill() }
        try await withHarness(echoes: 1) { endpoints in
            Self.config(endpoints, export: collector.export(service: "web"))
        } _: { (harness: Harness) async throws in
            #expect(try await fetch(harness.url + "/nowhere", ["-H", "Host: bad host"]).status == 400)
            let spans = try await collector.spans(count: 1)
            let span = try #require(spans.first)
            #expect(span.kind == "server" && span.name == "GET" && span.parentSpanID == nil)
            #expect(span.attribute("outrigger.reason") == "invalid_host" && span.attribute("http.response.status_code") == "400")
            #expect(span.attribute("outrigger.route") == nil && span.attribute("outrigger.attempts") == "0")
            #expect(span.error == nil, "a 4xx is the client's")
        }
    }

    /// A request retried after a 503 has two try spans, siblings under its server span: the first with the 503, the
    /// second with why it was started.
    @Test func aRetriedRequestShowsTwoTrySpans() async throws {
        let collector = try await TraceCollector.start()
        defer { collector.process.kill() }
        let refusing = try await RecordingUpstream.start(answer: "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        defer { Task { await refusing.stop() } }
        try await withHarness(echoes: 1) { endpoints in
            // Round robin starts at the first endpoint: the refusing one takes the first try.
            Self.config([HostPort(host: "127.0.0.1", port: refusing.port)] + endpoints, export: collector.export(service: "web"),
                        retries: RetryPolicy(attempts: 2, retryOn: [.fiveXX]))
        } _: { (harness: Harness) async throws in
            #expect(try await fetch(harness.url + "/retried").status == 200)
            let spans = try await collector.spans(count: 3)
            let server = try #require(spans.first { $0.kind == "server" })
            let tries = spans.filter { $0.kind == "client" }.sorted { ($0.attribute("outrigger.attempt") ?? "") < ($1.attribute("outrigger.attempt") ?? "") }
            try #require(tries.count == 2)
            #expect(tries.allSatisfy { $0.parentSpanID == server.spanID && $0.traceID == server.traceID })
            #expect(tries[0].attribute("http.response.status_code") == "503" && tries[0].error == "HTTP 503")
            #expect(tries[0].attribute("outrigger.endpoint") == "127.0.0.1:\(refusing.port)")
            #expect(tries[1].attribute("outrigger.retry_reason") == RetryPolicy.Condition.fiveXX.rawValue)
            #expect(tries[1].attribute("http.request.resend_count") == "1")
            #expect(tries[1].attribute("http.response.status_code") == "200" && tries[1].error == nil)
            #expect(tries[0].end <= tries[1].start)
            #expect(server.attribute("outrigger.attempts") == "2" && server.error == nil)
        }
    }

    /// Spans still queued when the sidecar shuts down are sent before it stops: here the batch would wait an hour for
    /// more spans, and only the shutdown sends it.
    @Test func spansStillQueuedAtShutdownAreSent() async throws {
        let collector = try await TraceCollector.start()
        defer { collector.process.kill() }
        try await withHarness(echoes: 1) { endpoints in
            Self.config(endpoints, export: nil)
        } _: { (next: Harness) async throws in
            var export = collector.export(service: "web")
            export.flushInterval = .seconds(3600)
            export.timeout = .seconds(60)
            let sidecar = try await Sidecar.start(config: Self.config([HostPort(host: "127.0.0.1", port: next.port)], export: export),
                                                  logger: Harness.quietLogger)
            do {
                #expect(try await fetch("http://127.0.0.1:\(sidecar.listenerAddresses["main"]!.port!)/last").status == 200)
                try await waitUntil { sidecar.spans.queued == 2 }
            } catch {
                await sidecar.shutdown()
                throw error
            }
            await sidecar.shutdown()
            let spans = try await collector.spans(count: 2)
            #expect(spans.count == 2 && Set(spans.compactMap(\.traceID)).count == 1)
        }
    }

    /// A collector that closes the connection after each answer: the next batch (one span each here, so one is always
    /// waiting) goes out on a new connection, never on the closing one — no send fails, no span is sent twice.
    @Test func aCollectorClosingEachConnectionGetsEveryBatchOnce() async throws {
        let collector = try await TraceCollector.start(closingEachConnection: true)
        defer { collector.process.kill() }
        try await withHarness(echoes: 1) { endpoints in
            var export = collector.export(service: "web")
            export.batchSize = 1
            return Self.config(endpoints, export: export)
        } _: { (harness: Harness) async throws in
            for index in 0..<6 {
                #expect(try await fetch(harness.url + "/close/\(index)").status == 200)
            }
            let spans = try await collector.spans(count: 12)
            #expect(Set(spans.compactMap(\.spanID)).count == 12 && spans.count == 12, "each once")
            try await waitUntil { try await Self.tracingStats(harness)["exported"] as? Int == 12 }
            #expect((try await Self.tracingStats(harness)["export_requests"] as? [String: Int])?["failed"] == 0)
        }
    }

    /// A hedge is a sibling try span too: the slow first try ends cancelled when the hedge's answer wins.
    @Test func aHedgedRequestShowsTheSlowTryAndTheHedgeAsSiblings() async throws {
        let collector = try await TraceCollector.start()
        defer { collector.process.kill() }
        try await withHarness(echoes: 2) { endpoints in
            Self.config(endpoints, export: collector.export(service: "web"),
                        retries: RetryPolicy(attempts: 2, retryOn: [.fiveXX], perTryTimeout: .milliseconds(200), hedgeOnPerTryTimeout: true))
        } _: { (harness: Harness) async throws in
            // Round robin on one event loop: the echo the warm-up did not reach takes the next first try.
            let warmUp = try await fetch(harness.url + "/")
            let slow = harness.echoes.first { $0.name != warmUp.headers["x-echo-server"] }!
            slow.setDelay(.seconds(20))
            #expect(try await fetch(harness.url + "/hedged").status == 200)
            let spans = try await collector.spans(count: 5)
            let server = try #require(spans.first { $0.kind == "server" && $0.attribute("url.path") == "/hedged" })
            let tries = spans.filter { $0.kind == "client" && $0.parentSpanID == server.spanID }
                .sorted { ($0.attribute("outrigger.attempt") ?? "") < ($1.attribute("outrigger.attempt") ?? "") }
            try #require(tries.count == 2, "\(spans.map(\.fields))")
            #expect(tries[0].attribute("error.type") == "cancelled" && tries[0].attribute("http.response.status_code") == nil)
            #expect(tries[1].attribute("outrigger.retry_reason") == "hedge" && tries[1].attribute("http.response.status_code") == "200")
            #expect(tries[0].start < tries[1].start && tries[1].start < tries[0].end, "they raced")
        }
    }

    /// A collector that refuses for a while gets the batch again (with backoff) until it takes it; Zipkin's format
    /// goes the same way.
    @Test func aBatchTheCollectorRefusedIsSentAgainAndZipkinJSONWorksToo() async throws {
        let collector = try await TraceCollector.start(refusing: 2)
        defer { collector.process.kill() }
        try await withHarness(echoes: 1) { endpoints in
            Self.config(endpoints, export: collector.export(service: "web", format: .zipkin))
        } _: { (harness: Harness) async throws in
            #expect(try await fetch(harness.url + "/zipkin").status == 200)
            let spans = try await collector.spans(count: 2)
            #expect(collector.process.text.components(separatedBy: "refused request").count - 1 == 2)
            let server = try #require(spans.first { $0.kind == "server" })
            #expect(spans.allSatisfy { $0.fields["format"] as? String == "zipkin" && $0.service == "web" })
            #expect(server.attribute("url.path") == "/zipkin")
            #expect(spans.first { $0.kind == "client" }?.parentSpanID == server.spanID)
            // Counted once the exporter has the collector's answer (the collector prints before it answers).
            try await waitUntil { try await Self.tracingStats(harness)["exported"] as? Int == 2 }
            let stats = try await Self.tracingStats(harness)
            #expect((stats["export_requests"] as? [String: Int])?["failed"] == 2)
        }
    }

    /// With the collector down, requests go on as before; the spans that do not fit the queue are dropped and
    /// counted, those sent fail and are counted, and `/traces` still shows them.
    @Test func aCollectorThatIsDownCostsRequestsNothingAndItsLossesAreCounted() async throws {
        let down = try RefusingPort()
        defer { down.close() }
        try await withHarness(echoes: 1) { endpoints in
            var export = TraceExportConfig(address: HostPort(host: "127.0.0.1", port: down.port), serviceName: "web")
            // Room for one span: a request's two spans, handed over together, cannot both be queued.
            export.maxQueuedSpans = 1
            return Self.config(endpoints, export: export)
        } _: { (harness: Harness) async throws in
            for index in 0..<10 {
                #expect(try await fetch(harness.url + "/down/\(index)").status == 200)
            }
            // Spans that found the queue full are dropped at once; the first batch sent fails after its five sends.
            try await waitUntil {
                let stats = try await Self.tracingStats(harness)
                return stats["recorded"] as? Int == 20 && (stats["dropped"] as? Int ?? 0) > 0 && (stats["failed"] as? Int ?? 0) > 0
            }
            let stats = try await Self.tracingStats(harness)
            #expect(stats["exported"] as? Int == 0)
            #expect((stats["dropped"] as? Int ?? 0) + (stats["failed"] as? Int ?? 0) + (stats["queued"] as? Int ?? 0) <= 20, "\(stats)")
            let metrics = try await fetch(harness.adminURL + "/stats/prometheus").body
            #expect(metrics.contains("outrigger_trace_spans_total{outcome=\"recorded\"} 20"))
            #expect(metrics.contains("outrigger_trace_spans_total{outcome=\"exported\"} 0"))

            let traces = try await fetch(harness.adminURL + "/traces")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(traces.body.utf8)) as? [String: Any])
            let spans = try #require(object["spans"] as? [[String: Any]])
            #expect(spans.count == 20)
            let newest = try #require(spans.first)
            #expect(newest["kind"] as? String == "server" && (newest["attributes"] as? [String: Any])?["url.path"] as? String == "/down/9",
                    "newest first: a request's server span ends after its try")
            let trace = try #require(newest["traceId"] as? String)
            let one = try await fetch(harness.adminURL + "/traces?trace=\(trace)")
            let filtered = try #require(try JSONSerialization.jsonObject(with: Data(one.body.utf8)) as? [String: Any])
            #expect((filtered["spans"] as? [[String: Any]])?.count == 2, "the server span and its try")
        }
    }

    /// A collector that takes the connection and never answers: each POST gives up at the export timeout, is counted
    /// as failed, and requests go on as before.
    @Test func aCollectorThatNeverAnswersTimesOutWithoutHoldingRequests() async throws {
        let silent = try RefusingPort()
        silent.startListening()  // the kernel accepts; nobody reads or answers
        defer { silent.close() }
        try await withHarness(echoes: 1) { endpoints in
            Self.config(endpoints, export: TraceExportConfig(address: HostPort(host: "127.0.0.1", port: silent.port), serviceName: "web",
                                                             timeout: .milliseconds(100)))
        } _: { (harness: Harness) async throws in
            for index in 0..<5 {
                #expect(try await fetch(harness.url + "/silent/\(index)").status == 200)
            }
            try await waitUntil {
                let stats = try await Self.tracingStats(harness)
                return stats["recorded"] as? Int == 10 && ((stats["export_requests"] as? [String: Int])?["failed"] ?? 0) >= 2
            }
            #expect(try await Self.tracingStats(harness)["exported"] as? Int == 0)
        }
    }

    static func tracingStats(_ harness: Harness) async throws -> [String: Any] {
        let body = try await fetch(harness.adminURL + "/stats").body
        let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        return object?["tracing"] as? [String: Any] ?? [:]
    }
}
