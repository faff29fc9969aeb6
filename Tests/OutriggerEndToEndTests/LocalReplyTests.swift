import Foundation
import OutriggerConfig
import Testing

@Suite("Local replies say why, end to end")
struct LocalReplyTests {
    @Test func connectFailureIs503() async throws {
        let refusing = try RefusingPort()
        defer { refusing.close() }
        let port = refusing.port
        try await withHarness(echoes: 0) { _ in
            Harness.defaultConfig([HostPort(host: "127.0.0.1", port: port)])
        } _: { (harness: Harness) async throws in
            for arguments in [[], ["--http2-prior-knowledge"]] {
                let response = try await fetch(harness.url + "/", arguments)
                #expect(response.status == 503)
                #expect(response.headers["x-outrigger-reason"] == "connect_failure")
                #expect(response.body.hasPrefix("connect_failure: "))
            }
            let stats = try await fetch(harness.adminURL + "/stats/prometheus").body
            #expect(stats.contains("outrigger_local_replies_total{reason=\"connect_failure\"} 2\n"))
            #expect(stats.contains("outrigger_upstream_connect_failures_total{cluster=\"upstream\"} 2\n"))
        }
    }

    @Test func connectTimeoutIs503() async throws {
        let unanswered = try UnansweredPort()
        defer { unanswered.close() }
        try await withHarness(echoes: 0) { _ in
            Harness.config(routes: [RouteConfig(destination: .cluster("slow-connect"))],
                           clusters: [ClusterConfig(name: "slow-connect", endpoints: [HostPort(host: "127.0.0.1", port: unanswered.port)],
                                                    connectTimeout: .milliseconds(200), timeout: .seconds(30))])
        } _: { (harness: Harness) async throws in
            let response = try await fetch(harness.url + "/", ["-w", "\n%{time_total}"])
            #expect(response.status == 503)
            #expect(response.headers["x-outrigger-reason"] == "connect_failure")
            // Loose bound: the 200 ms connect timeout answers, long before the 30 s route timeout.
            let seconds = Double(response.body.split(separator: "\n").last ?? "") ?? 99
            #expect(seconds >= 0.2 && seconds < 10, "took \(seconds) s")
        }
    }

    @Test func upstreamResetIs502() async throws {
        try await withHarness(echoes: 1) { harness in
            let response = try await fetch(harness.url + "/?reset=1")
            #expect(response.status == 502)
            #expect(response.statusLine == "HTTP/1.1 502 Bad Gateway", "always a reason phrase")
            #expect(response.headers["x-outrigger-reason"] == "upstream_reset")
            // The proxy recovers: the next request opens a fresh upstream connection.
            #expect(try await fetch(harness.url + "/").status == 200)
        }
    }

    @Test func upstreamResetOverHTTP2Upstream() async throws {
        try await withHarness(echoes: 1, HTTP2ProxyTests.h2Upstream) { harness in
            let response = try await fetch(harness.url + "/?reset=1", ["--http2-prior-knowledge"])
            #expect(response.status == 502)
            #expect(response.headers["x-outrigger-reason"] == "upstream_reset")
            #expect(try await fetch(harness.url + "/").status == 200, "other streams on the connection are unaffected")
        }
    }

    @Test func routeTimeoutIs504() async throws {
        try await withHarness(echoes: 1) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("slow"), timeout: .milliseconds(200))],
                           clusters: [ClusterConfig(name: "slow", endpoints: endpoints)])
        } _: { (harness: Harness) async throws in
            let response = try await fetch(harness.url + "/?delay=10000", ["-w", "\n%{time_total}"])
            #expect(response.status == 504)
            #expect(response.statusLine == "HTTP/1.1 504 Gateway Timeout")
            #expect(response.headers["x-outrigger-reason"] == "upstream_timeout")
            // Loose bound: fires at 200 ms, never waits for the 10 s upstream.
            let seconds = Double(response.body.split(separator: "\n").last ?? "") ?? 99
            #expect(seconds >= 0.2 && seconds < 5, "took \(seconds) s")
            let stats = try await fetch(harness.adminURL + "/stats/prometheus").body
            #expect(stats.contains("outrigger_request_duration_seconds_count{listener=\"main\"} 1\n"), "recorded once")
            #expect(stats.contains("outrigger_downstream_requests_active{listener=\"main\"} 0\n"))
            #expect(stats.contains("outrigger_upstream_requests_active{cluster=\"slow\"} 0\n"))
        }
    }

    @Test func clusterDefaultTimeoutApplies() async throws {
        try await withHarness(echoes: 1) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("slow"))],
                           clusters: [ClusterConfig(name: "slow", endpoints: endpoints, timeout: .milliseconds(150))])
        } _: { (harness: Harness) async throws in
            #expect(try await fetch(harness.url + "/?delay=10000", ["--http2-prior-knowledge"]).headers["x-outrigger-reason"] == "upstream_timeout")
        }
    }

    @Test func hangingUpstreamTimesOut() async throws {
        let upstream = try await RecordingUpstream.start()
        defer { Task { await upstream.stop() } }
        try await withHarness(echoes: 0) { _ in
            Harness.config(routes: [RouteConfig(destination: .cluster("hang"), timeout: .milliseconds(200))],
                           clusters: [ClusterConfig(name: "hang", endpoints: [HostPort(host: "127.0.0.1", port: upstream.port)])])
        } _: { (harness: Harness) async throws in
            #expect(try await fetch(harness.url + "/").headers["x-outrigger-reason"] == "upstream_timeout")
        }
    }

    @Test func poolOverflowIs503() async throws {
        // An upstream that never answers holds the pool's only connection for as long as the test needs.
        let upstream = try await RecordingUpstream.start()
        defer { Task { await upstream.stop() } }
        try await withHarness(echoes: 0) { _ in
            var config = Harness.config(routes: [RouteConfig(destination: .cluster("tiny"))],
                                        clusters: [ClusterConfig(name: "tiny", endpoints: [HostPort(host: "127.0.0.1", port: upstream.port)],
                                                                 timeout: .seconds(60), pool: PoolConfig(maxConnectionsPerEndpoint: 1, maxPendingRequests: 0))])
            config.drainTimeout = .milliseconds(100)
            return config
        } _: { (harness: Harness) async throws in
            async let held = curl([harness.url + "/held"])
            try await waitUntil { upstream.receivedBytes > 0 }
            let response = try await fetch(harness.url + "/")
            #expect(response.status == 503)
            #expect(response.headers["x-outrigger-reason"] == "overflow")
            // Shutdown cuts the held request after the (short) drain timeout, which ends its curl.
            await harness.sidecar.shutdown()
            _ = try await held
        }
    }

    @Test func pendingRequestsWaitForAFreeConnection() async throws {
        try await withHarness(echoes: 1) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("tiny"))],
                           clusters: [ClusterConfig(name: "tiny", endpoints: endpoints, pool: PoolConfig(maxConnectionsPerEndpoint: 1, maxPendingRequests: 10))])
        } _: { (harness: Harness) async throws in
            // 10 concurrent requests: one on the connection, nine queued (limit 10).
            let result = try await run("h2load", ["-n", "100", "-c", "2", "-m", "5", harness.url + "/?delay=1"])
            #expect(result.stdout.contains("100 succeeded, 0 failed, 0 errored"), "\(result.stdout)")
            let stats = try await fetch(harness.adminURL + "/stats/prometheus").body
            #expect(stats.contains("outrigger_upstream_connections_total{cluster=\"tiny\"} 1\n"))
        }
    }

    @Test func clusterWithoutEndpointsIsNoHealthyUpstream() async throws {
        try await withHarness(echoes: 0) { _ in
            Harness.config(routes: [RouteConfig(destination: .cluster("gone"))],
                           clusters: [ClusterConfig(name: "gone", endpoints: [])])
        } _: { (harness: Harness) async throws in
            let response = try await fetch(harness.url + "/")
            #expect(response.status == 503)
            #expect(response.headers["x-outrigger-reason"] == "no_healthy_upstream")
        }
    }

    @Test func grpcRequestsGetAGRPCStatus() async throws {
        let refusing = try RefusingPort()
        defer { refusing.close() }
        let port = refusing.port
        try await withHarness(echoes: 0) { _ in
            Harness.defaultConfig([HostPort(host: "127.0.0.1", port: port)])
        } _: { (harness: Harness) async throws in
            let reply = try await rawHTTP2(port: harness.port, headers: [
                (":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", "/pkg.Service/Method"),
                ("content-type", "application/grpc"), ("te", "trailers"),
            ])
            let headers = try #require(reply["headers"] as? [String: String])
            let trailers = try #require(reply["trailers"] as? [String: String])
            #expect(reply["status"] as? Int == 200)
            #expect(headers["content-type"] == "application/grpc")
            #expect(trailers["grpc-status"] == "14", "UNAVAILABLE, not a bare HTTP error")
            #expect(headers["x-outrigger-reason"] == "connect_failure")
        }
    }
}

/// Polls `condition` until it holds (an event the test cannot subscribe to), failing after `timeout`.
/// Polls `condition` until it holds. The timeout only bounds a failing test: a busy machine can take many seconds
/// to start a peer (Prometheus, a Python gRPC client) that a test waits for.
func waitUntil(timeout: Duration = .seconds(60), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    Issue.record("condition not met within \(timeout)")
    throw CancellationError()
}
