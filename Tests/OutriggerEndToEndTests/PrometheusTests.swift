import Foundation
import OutriggerConfig
import OutriggerProxy
import Testing

/// The exposition checked by Prometheus's own tools, scraped by a real Prometheus server, and the alert rules in
/// `config/alerts.yaml` run against their unit tests.
@Suite("Prometheus: exposition, scrape and alert rules")
struct PrometheusTests {
    static let configDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../config").standardized.path

    /// Traffic that fills most families: relayed responses, a retry, a local reply, sampled spans.
    static func busyHarness(_ body: @escaping (Harness) async throws -> Void) async throws {
        let refusing = try await RecordingUpstream.start(answer: "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        defer { Task { await refusing.stop() } }
        try await withHarness(echoes: 1) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("users"), retries: RetryPolicy(attempts: 2, retryOn: [.fiveXX]))],
                           clusters: [ClusterConfig(name: "users", endpoints: [HostPort(host: "127.0.0.1", port: refusing.port)] + endpoints)]) { listener in
                listener.tracing = TracingConfig(sampleRatio: 1)
            }
        } _: { (harness: Harness) async throws in
            for index in 0..<4 { #expect(try await fetch(harness.url + "/users/\(index)").status == 200) }
            #expect(try await fetch(harness.url + "/x", ["-H", "Host: bad host"]).status == 400)
            try await body(harness)
        }
    }

    @Test func theExpositionPassesPromtoolCheckMetrics() async throws {
        try await Self.busyHarness { harness in
            let exposition = try await fetch(harness.adminURL + "/stats/prometheus").body
            #expect(exposition.contains("outrigger_upstream_retries_total{cluster=\"users\"} ") && !exposition.contains("outrigger_upstream_retries_total{cluster=\"users\"} 0"),
                    "the traffic is in it")
            #expect(exposition.contains("outrigger_cluster_timeout_seconds{cluster=\"users\"} 15"))
            // Each 503 is a failed try of the refusing endpoint, and a try of its own.
            let stats = harness.sidecar.configStore.stats.cluster("users")
            let refusingPort = harness.sidecar.configStore.snapshot.clusters["users"]?.endpoints.first?.addressText ?? ""
            #expect(exposition.contains("outrigger_endpoint_failures_total{cluster=\"users\",endpoint=\"\(refusingPort)\"} \(stats.retries.current)\n"))
            #expect(exposition.contains("outrigger_cluster_try_duration_seconds_count{cluster=\"users\"} \(4 + stats.retries.current)\n"))
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("exposition-\(UUID().uuidString).txt")
            try exposition.write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            let check = try await run("sh", ["-c", "\"$0\" check metrics < \"$1\"", try which("promtool"), file.path])
            #expect(check.status == 0, "promtool: \(check.stdout)\(check.stderr)")
            // promtool can fail: a counter without _total is flagged.
            try (exposition + "# HELP bad_counter x\n# TYPE bad_counter counter\nbad_counter 1\n").write(to: file, atomically: true, encoding: .utf8)
            let broken = try await run("sh", ["-c", "\"$0\" check metrics < \"$1\"", try which("promtool"), file.path])
            #expect(broken.status != 0 && (broken.stdout + broken.stderr).contains("bad_counter"))
        }
    }

    /// Prometheus itself scrapes the sidecar's admin and answers PromQL on our series: a rate, and a quantile from
    /// the per-cluster histogram.
    @Test func aPrometheusServerScrapesASidecarAndAnswersAQuery() async throws {
        try await Self.busyHarness { harness in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("prometheus-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            try """
            global: {scrape_interval: 200ms, evaluation_interval: 200ms}
            scrape_configs:
              - job_name: sidecar
                metrics_path: /stats/prometheus
                static_configs: [{targets: ['127.0.0.1:\(harness.adminPort)']}]
            """.write(to: directory.appendingPathComponent("prometheus.yml"), atomically: true, encoding: .utf8)
            let prometheus = try ChildProcess(try which("prometheus"), [
                "--config.file=\(directory.path)/prometheus.yml", "--storage.tsdb.path=\(directory.path)/data",
                "--web.listen-address=127.0.0.1:0",
            ])
            defer { prometheus.kill() }
            let announced = try await prometheus.waitForOutput(containing: "msg=\"Listening on\" address=127.0.0.1:")
            let port = try ProcessTests.port(in: announced, after: "msg=\"Listening on\" address=127.0.0.1:")

            func query(_ promQL: String) async throws -> [[String: Any]] {
                let encoded = promQL.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? promQL
                let body = try await fetch("http://127.0.0.1:\(port)/api/v1/query?query=\(encoded)").body
                // Prometheus listens before its storage is ready, and answers "Service Unavailable" meanwhile: no result yet.
                let object = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
                return (object?["data"] as? [String: Any])?["result"] as? [[String: Any]] ?? []
            }
            func value(_ sample: [String: Any]) -> String? { (sample["value"] as? [Any])?.last as? String }

            // Scraped once the target is up and the series has our value.
            try await waitUntil {
                try await query("outrigger_downstream_requests_total{job=\"sidecar\",listener=\"main\"}").first.flatMap(value) == "5"
            }
            let retried = harness.sidecar.configStore.stats.cluster("users").retries.current
            #expect(retried > 0)
            let retries = try await query("sum by (cluster) (outrigger_upstream_retries_by_reason_total{reason=\"5xx\"})")
            #expect(retries.count == 1 && value(retries[0]) == String(retried))
            #expect((retries[0]["metric"] as? [String: String])?["cluster"] == "users")
            let up = try await query("up{job=\"sidecar\"}")
            #expect(up.first.flatMap(value) == "1")
            let p99 = try await query("histogram_quantile(0.99, sum by (le) (outrigger_cluster_request_duration_seconds_bucket{cluster=\"users\"}))")
            let seconds = try #require(p99.first.flatMap(value).flatMap(Double.init))
            #expect(seconds > 0 && seconds < 15, "a quantile from our buckets: \(seconds)")
        }
    }

    @Test func theAlertRulesPassTheirUnitTests() async throws {
        let check = try await run("promtool", ["check", "rules", "\(Self.configDirectory)/alerts.yaml"])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("8 rules found"))
        let test = try await run("sh", ["-c", "cd \"$1\" && \"$0\" test rules alerts.test.yaml", try which("promtool"), Self.configDirectory])
        #expect(test.status == 0, "\(test.stdout)\(test.stderr)")
        #expect(test.stdout.contains("SUCCESS"))
    }
}
