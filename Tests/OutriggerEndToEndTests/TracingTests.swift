import Foundation
import OutriggerConfig
import Testing

/// Trace-context propagation through the sidecar, with the echo upstream saying what it received.
@Suite("Trace-context propagation, end to end")
struct TracingTests {
    static let trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    static let parent = "00f067aa0ba902b7"

    /// A config whose one listener routes to the echoes, with `tracing` and `direction` as given.
    static func config(_ tracing: TracingConfig, direction: ListenerConfig.Direction = .inbound) -> ([HostPort]) -> SidecarConfig {
        { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("upstream"))],
                           clusters: [ClusterConfig(name: "upstream", endpoints: endpoints)]) { listener in
                listener.tracing = tracing
                listener.direction = direction
            }
        }
    }

    /// `traceparent`'s four fields.
    static func fields(_ value: String?) -> [String] {
        value.map { $0.split(separator: "-").map(String.init) } ?? []
    }

    @Test func theCallersTraceIsJoinedWithASpanOfOurs() async throws {
        try await withHarness(echoes: 1) { harness in
            let echo = try #require(try await fetch(harness.url + "/joined", [
                "-H", "traceparent: 00-\(Self.trace)-\(Self.parent)-01", "-H", "tracestate: congo=t61rcWkgMzE",
            ]).echo)
            let sent = Self.fields(echo.headers["traceparent"])
            #expect(sent.count == 4 && sent[0] == "00")
            #expect(sent[1] == Self.trace, "the same trace")
            #expect(sent[2] != Self.parent && sent[2].count == 16 && sent[2] != String(repeating: "0", count: 16), "our try's span is the parent now")
            #expect(sent[3] == "01", "the caller's sampling decision is followed")
            #expect(echo.headers["tracestate"] == "congo=t61rcWkgMzE")
            #expect(echo.headers["b3"] == nil && echo.headers["x-b3-traceid"] == nil, "answered in the format it came in")
        }
    }

    @Test func aRequestWithoutATraceOrWithAnInvalidOneStartsANewTrace() async throws {
        try await withHarness(echoes: 1, Self.config(TracingConfig(sampleRatio: 1))) { harness in
            let fresh = try #require(try await fetch(harness.url + "/fresh").echo)
            let started = Self.fields(fresh.headers["traceparent"])
            #expect(started.count == 4 && started[1].count == 32 && started[3] == "01", "a root, sampled at ratio 1")

            let broken = try #require(try await fetch(harness.url + "/broken", [
                "-H", "traceparent: 00-\(Self.trace.uppercased())-\(Self.parent)-01", "-H", "tracestate: a=1",
            ]).echo)
            let replaced = Self.fields(broken.headers["traceparent"])
            #expect(replaced.count == 4 && replaced[1] != Self.trace.uppercased() && replaced[1] != Self.trace)
            #expect(broken.headers["tracestate"] == nil, "no tracestate without a valid traceparent")
        }
        try await withHarness(echoes: 1, Self.config(TracingConfig(sampleRatio: 0))) { harness in
            let echo = try #require(try await fetch(harness.url + "/unsampled").echo)
            #expect(Self.fields(echo.headers["traceparent"]).last == "00", "ratio 0: not sampled, still propagated")
        }
    }

    /// A route's header rules that put a `traceparent` on the upstream request are read like the caller's: that
    /// trace is joined, and its header replaced by the try's, not sent beside it.
    @Test func aTraceparentSetByTheRoutesRulesIsJoined() async throws {
        try await withHarness(echoes: 1) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("upstream"), requestHeaders: HeaderMutations(
                set: [HeaderValue(name: "traceparent", value: "00-\(Self.trace)-\(Self.parent)-01")]))],
                           clusters: [ClusterConfig(name: "upstream", endpoints: endpoints)])
        } _: { (harness: Harness) async throws in
            let echo = try #require(try await fetch(harness.url + "/set-by-route").echo)
            let sent = Self.fields(echo.headers["traceparent"])
            #expect(sent.count == 4 && sent[1] == Self.trace && sent[2] != Self.parent && sent[3] == "01", "\(sent)")
        }
    }

    @Test func b3InIsB3Out() async throws {
        try await withHarness(echoes: 1) { harness in
            let multi = try #require(try await fetch(harness.url + "/multi", [
                "-H", "X-B3-TraceId: a3ce929d0e0e4736", "-H", "X-B3-SpanId: \(Self.parent)", "-H", "X-B3-Sampled: 1",
            ]).echo)
            #expect(multi.headers["x-b3-traceid"] == "a3ce929d0e0e4736", "a 64-bit id stays 64 bits")
            let span = try #require(multi.headers["x-b3-spanid"])
            #expect(span.count == 16 && span != Self.parent)
            #expect(multi.headers["x-b3-parentspanid"]?.count == 16)
            #expect(multi.headers["x-b3-sampled"] == "1")
            #expect(multi.headers["traceparent"] == nil)

            let single = try #require(try await fetch(harness.url + "/single", ["-H", "b3: \(Self.trace)-\(Self.parent)-d"]).echo)
            let parts = try #require(single.headers["b3"]).split(separator: "-").map(String.init)
            #expect(parts.count == 4 && parts[0] == Self.trace && parts[1] != Self.parent && parts[2] == "d")
        }
    }

    /// Each try is a span of its own: a retried request reaches two upstreams with the same trace and parent sampling
    /// decision, and two different spans.
    @Test func aRetriedRequestsTriesCarryTwoSpansOfOneTrace() async throws {
        let refusing = try await RecordingUpstream.start(answer: "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        defer { Task { await refusing.stop() } }
        try await withHarness(echoes: 1) { endpoints in
            // Round robin starts at the first endpoint: the refusing one takes the first try.
            Harness.config(routes: [RouteConfig(destination: .cluster("c"), retries: RetryPolicy(attempts: 2, retryOn: [.fiveXX]))],
                           clusters: [ClusterConfig(name: "c", endpoints: [HostPort(host: "127.0.0.1", port: refusing.port)] + endpoints)])
        } _: { (harness: Harness) async throws in
            let echo = try #require(try await fetch(harness.url + "/retried", ["-H", "traceparent: 00-\(Self.trace)-\(Self.parent)-01"]).echo)
            #expect(echo.headers["x-outrigger-attempt"] == "2")
            let second = Self.fields(echo.headers["traceparent"])
            let firstLine = try #require(refusing.receivedText.split(separator: "\r\n").first { $0.lowercased().hasPrefix("traceparent:") })
            let first = Self.fields(firstLine.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) })
            #expect(first.count == 4 && second.count == 4)
            #expect(first[1] == Self.trace && second[1] == Self.trace, "one trace")
            #expect(first[2] != second[2] && first[2] != Self.parent && second[2] != Self.parent, "a span per try")
            #expect(first[3] == "01" && second[3] == "01")
            #expect(refusing.receivedText.components(separatedBy: "traceparent").count == 2, "one traceparent header on the first try")

            // No trace came: each try's header goes after the head's fields with the proxy's other own fields.
            let sentBefore = refusing.receivedText.components(separatedBy: "traceparent").count
            let fresh = try #require(try await fetch(harness.url + "/retried-fresh").echo)
            #expect(fresh.headers["x-outrigger-attempt"] == "2")
            let retried = Self.fields(fresh.headers["traceparent"])
            let freshText = refusing.receivedText.components(separatedBy: "/retried-fresh").last ?? ""
            let freshLine = try #require(freshText.split(separator: "\r\n").first { $0.lowercased().hasPrefix("traceparent:") })
            let tried = Self.fields(freshLine.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) })
            #expect(tried.count == 4 && retried.count == 4 && tried[1] == retried[1] && tried[1] != Self.trace, "one new trace")
            #expect(tried[2] != retried[2], "a span per try")
            #expect(refusing.receivedText.components(separatedBy: "traceparent").count == sentBefore + 1, "one traceparent header on the first try")
            // The request id generated here, and the forwarding fields, are the same on both tries, once each; each
            // try has an expected timeout, once.
            let firstFields = Dictionary(freshText.split(separator: "\r\n").compactMap { line -> (String, [String])? in
                let parts = line.split(separator: ":", maxSplits: 1)
                return parts.count == 2 ? (parts[0].lowercased(), [parts[1].trimmingCharacters(in: .whitespaces)]) : nil
            }, uniquingKeysWith: +)
            for name in ["x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-outrigger-expected-timeout-ms"] {
                #expect(firstFields[name]?.count == 1, "\(name) once on the first try: \(firstFields)")
            }
            #expect(firstFields["x-request-id"]?.first?.count == 36 && fresh.headers["x-request-id"] == firstFields["x-request-id"]?.first)
            #expect(fresh.headers["x-forwarded-for"] == "127.0.0.1" && fresh.headers["x-forwarded-proto"] == "http")
            #expect(Int(fresh.headers["x-outrigger-expected-timeout-ms"] ?? "") != nil)
        }
    }

    @Test func forwardModePassesTheHeadersUntouched() async throws {
        try await withHarness(echoes: 1, Self.config(TracingConfig(mode: .forward))) { harness in
            let echo = try #require(try await fetch(harness.url + "/forward", [
                "-H", "traceparent: 00-\(Self.trace)-\(Self.parent)-01", "-H", "X-B3-TraceId: zz",
            ]).echo)
            #expect(echo.headers["traceparent"] == "00-\(Self.trace)-\(Self.parent)-01")
            #expect(echo.headers["x-b3-traceid"] == "zz")
            let bare = try #require(try await fetch(harness.url + "/bare").echo)
            #expect(bare.headers["traceparent"] == nil, "no trace started")
        }
    }

    @Test func theForceHeaderSamplesFromATrustedSideOnlyAndIsNeverForwarded() async throws {
        try await withHarness(echoes: 1, Self.config(TracingConfig(sampleRatio: 0), direction: .outbound)) { harness in
            let echo = try #require(try await fetch(harness.url + "/forced", ["-H", "x-outrigger-trace: 1"]).echo)
            #expect(Self.fields(echo.headers["traceparent"]).last == "01", "the local service asked for it")
            #expect(echo.headers["x-outrigger-trace"] == nil)
        }
        try await withHarness(echoes: 1, Self.config(TracingConfig(sampleRatio: 0))) { harness in
            let echo = try #require(try await fetch(harness.url + "/untrusted", ["-H", "x-outrigger-trace: 1"]).echo)
            #expect(Self.fields(echo.headers["traceparent"]).last == "00", "an inbound client cannot force sampling")
            #expect(echo.headers["x-outrigger-trace"] == nil)
        }
    }

    @Test func baggageOverItsLimitsIsTrimmedNotRefused() async throws {
        try await withHarness(echoes: 1) { harness in
            let baggage = (0..<200).map { "key\($0)=value\($0)" }.joined(separator: ",")
            let response = try await fetch(harness.url + "/baggage", ["-H", "baggage: \(baggage)"])
            #expect(response.status == 200)
            let kept = try #require(response.echo?.headers["baggage"])
            #expect(kept.split(separator: ",").count == 180)
            #expect(kept.hasPrefix("key0=value0,"))
        }
    }
}
