import Foundation
import OutriggerConfig
import Testing

/// A sidecar.yaml in a temporary directory, rewritten by the test.
struct ConfigFile {
    let path: String

    init() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("sidecar.yaml").path
    }

    func write(_ text: String) throws {
        // Write and rename, as editors and config management do: the watcher must see a replaced file.
        let temporary = path + ".tmp"
        try text.write(toFile: temporary, atomically: false, encoding: .utf8)
        _ = rename(temporary, path)
    }

    /// One listener on port 0 routing everything to `cluster`, plus the clusters given as name → port.
    static func yaml(cluster: String, clusters: [String: Int], listenerName: String = "main", extraListener: String = "",
                     responseHeader: String = "initial", admin: Bool = true) -> String {
        var text = admin ? "admin: {address: 127.0.0.1:0}\n" : "admin: {enabled: false}\n"
        text += """
        concurrency: 1
        drainTimeout: 5s
        listeners:
          - name: \(listenerName)
            address: 127.0.0.1:0
            routes:
              - cluster: \(cluster)
                responseHeaders: {set: {x-config: \(responseHeader)}}
        \(extraListener)
        clusters:

        """
        // A 10 s connect timeout: with the whole suite running on two cores, an in-process upstream's accept
        // can lag past the default 1 s (a clean CI run saw `503 connect_failure` in the reload-under-load test).
        for (name, port) in clusters.sorted(by: { $0.key < $1.key }) {
            text += "  - {name: \(name), endpoints: [127.0.0.1:\(port)], connectTimeout: 10s}\n"
        }
        return text
    }
}

/// Echo servers, then a sidecar started from a config file that `yaml` writes with their ports.
func withConfigFile(
    echoes: Int,
    _ yaml: @escaping ([Int]) -> String,
    _ body: (Harness, ConfigFile, [Int]) async throws -> Void
) async throws {
    let file = try ConfigFile()
    try await withHarness(echoes: echoes, configPath: file.path) { endpoints in
        try file.write(yaml(endpoints.map(\.port)))
        return try SidecarConfig.load(contentsOf: file.path)
    } _: { (harness: Harness) async throws in
        try await body(harness, file, harness.echoes.map { $0.localAddress.port! })
    }
}

@Suite("Config reload and admin, end to end")
struct ReloadAndAdminTests {
    @Test func reloadSwapsRoutesAndABadFileKeepsTheRunningConfig() async throws {
        try await withConfigFile(echoes: 2, { ConfigFile.yaml(cluster: "a", clusters: ["a": $0[0], "b": $0[1]]) }) { harness, file, ports in
            #expect(try await fetch(harness.url).echo?.server == "echo-0")

            // A request in flight during the reload finishes on the config it started with. It stays in flight
            // long enough for the poll below (in-process, no curl to start) to see it even on a busy machine.
            async let inFlight = fetch(harness.url + "/?delay=5000")
            try await waitUntil { harness.sidecar.configStore.stats.requestsActive == 1 }
            try file.write(ConfigFile.yaml(cluster: "b", clusters: ["a": ports[0], "b": ports[1]]))
            #expect(await harness.sidecar.reload())
            #expect(try await fetch(harness.url).echo?.server == "echo-1")
            let old = try await inFlight
            #expect(old.echo?.server == "echo-0")
            #expect(old.headers["x-config"] == "initial", "its response headers come from the old route too")
            #expect(try await fetch(harness.adminURL + "/config_dump").body.contains("\"version\": 2"))

            try file.write("listeners:\n  - name: main\n    adress: 127.0.0.1:0\n")
            #expect(await harness.sidecar.reload() == false)
            #expect(try await fetch(harness.url).echo?.server == "echo-1", "the running config stays")
            let stats = try await fetch(harness.adminURL + "/stats/prometheus").body
            #expect(stats.contains("outrigger_config_reloads_total{result=\"success\"} 1\n"))
            #expect(stats.contains("outrigger_config_reloads_total{result=\"failure\"} 1\n"))
        }
    }

    /// A config prepared (validated, warmed) serves nothing until it is activated; one that cannot be prepared says
    /// why and changes nothing. (The two halves of `apply`, for a staged rollout.)
    @Test func aPreparedConfigServesNothingUntilActivated() async throws {
        try await withConfigFile(echoes: 2, { ConfigFile.yaml(cluster: "a", clusters: ["a": $0[0], "b": $0[1]]) }) { harness, file, ports in
            try file.write(ConfigFile.yaml(cluster: "b", clusters: ["a": ports[0], "b": ports[1]]))
            let prepared = try await harness.sidecar.prepare(try SidecarConfig.load(contentsOf: file.path))
            for _ in 0..<3 { #expect(try await fetch(harness.url).echo?.server == "echo-0", "prepared, not served") }

            // An access log that cannot be opened (a directory): only preparing finds it.
            var unopenable = try SidecarConfig.load(contentsOf: file.path)
            let directory = FileManager.default.temporaryDirectory.path
            unopenable.listeners[0].accessLog = AccessLogConfig(path: directory)
            do {
                _ = try await harness.sidecar.prepare(unopenable)
                Issue.record("a config whose access log cannot be opened was prepared")
            } catch {
                #expect("\(error)".contains(directory), "\(error)")
            }

            try await harness.sidecar.activate(prepared)
            #expect(try await fetch(harness.url).echo?.server == "echo-1")
            #expect(try await fetch(harness.adminURL + "/config_dump").body.contains("\"version\": 2"), "one swap: prepare counts no version")
        }
    }

    @Test func reloadAddsAndRemovesListeners() async throws {
        try await withConfigFile(echoes: 1, { ConfigFile.yaml(cluster: "a", clusters: ["a": $0[0]]) }) { harness, file, ports in
            let port = ports[0]
            let firstPort = harness.port(of: "main")
            try file.write(ConfigFile.yaml(cluster: "a", clusters: ["a": port], extraListener: """
              - name: second
                address: 127.0.0.1:0
                routes: [{cluster: a}]
            """))
            #expect(await harness.sidecar.reload())
            #expect(harness.port(of: "main") == firstPort, "an unchanged listener keeps its socket")
            #expect(try await fetch("http://127.0.0.1:\(harness.port(of: "second"))/").status == 200)

            try file.write(ConfigFile.yaml(cluster: "a", clusters: ["a": port], listenerName: "renamed"))
            #expect(await harness.sidecar.reload())
            #expect(harness.sidecar.listenerAddresses.keys.sorted() == ["renamed"])
            let refused = try await curl(["http://127.0.0.1:\(firstPort)/"])
            #expect(refused.status != 0, "the removed listener no longer accepts")
        }
    }

    @Test func reloadUnderLoadFailsNoRequest() async throws {
        try await withConfigFile(echoes: 2, { ConfigFile.yaml(cluster: "a", clusters: ["a": $0[0], "b": $0[1]]) }) { harness, file, ports in
            async let load = run("h2load", ["-n", "6000", "-c", "8", "-m", "4", harness.url + "/?delay=1"])
            async let h1load = curl(Array(repeating: ["-o", "/dev/null", "-w", "%{http_code} %header{x-outrigger-reason}\n", harness.url + "/h1"], count: 300).flatMap { $0 })
            for round in 0..<10 {
                try file.write(ConfigFile.yaml(cluster: round % 2 == 0 ? "b" : "a", clusters: ["a": ports[0], "b": ports[1]], responseHeader: "round\(round)"))
                #expect(await harness.sidecar.reload())
            }
            let result = try await load
            #expect(result.stdout.contains("6000 succeeded, 0 failed, 0 errored"), "\(result.stdout)")
            #expect(result.stdout.contains("status codes: 6000 2xx"))
            let h1 = try await h1load
            let codes = h1.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(codes.count == 300 && codes.allSatisfy { $0 == "200" }, "status and reason of the others: \(codes.filter { $0 != "200" }) \(h1.stderr)")
        }
    }

    @Test func adminEndpoints() async throws {
        try await withHarness(echoes: 1) { harness in
            _ = try await fetch(harness.url + "/one")
            _ = try await fetch(harness.url + "/two", ["--http2-prior-knowledge"])

            let ready = try await fetch(harness.adminURL + "/ready")
            #expect(ready.status == 200 && ready.body == "ready\n")
            #expect(try await fetch(harness.adminURL + "/live").status == 200)

            let dump = try await fetch(harness.adminURL + "/config_dump")
            #expect(dump.headers["content-type"] == "application/json")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(dump.body.utf8)) as? [String: Any])
            #expect(object["version"] as? Int == 1)
            let config = try #require(object["config"] as? [String: Any])
            #expect((config["listeners"] as? [[String: Any]])?.first?["name"] as? String == "quickstart")

            let stats = try await fetch(harness.adminURL + "/stats")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(stats.body.utf8)) as? [String: Any])
            let listener = try #require((json["listeners"] as? [[String: Any]])?.first)
            #expect(listener["requests_total"] as? Int == 2)
            let durations = try #require(listener["request_duration_ms"] as? [String: Any])
            #expect(durations["count"] as? Int == 2)
            #expect(durations.keys.sorted() == ["count", "p50", "p90", "p99", "p99_9"])
            let cluster = try #require((json["clusters"] as? [[String: Any]])?.first { $0["name"] as? String == "upstream" })
            let clusterDurations = try #require(cluster["request_duration_ms"] as? [String: Any])
            let upstreamTimes = try #require(cluster["upstream_response_ms"] as? [String: Any])
            #expect(clusterDurations["count"] as? Int == 2 && upstreamTimes["count"] as? Int == 2)
            #expect((cluster["try_duration_ms"] as? [String: Any])?["count"] as? Int == 2, "one try each")
            let route = try #require((json["routes"] as? [[String: Any]])?.first { $0["listener"] as? String == "quickstart" })
            #expect((route["request_duration_ms"] as? [String: Any])?["count"] as? Int == 2)
            #expect((route["upstream_response_ms"] as? [String: Any])?["count"] as? Int == 2)
            let p50 = try #require(clusterDurations["p50"] as? Double)
            #expect(p50 > 0, "the requests took time")

            let prometheus = try await fetch(harness.adminURL + "/stats/prometheus")
            #expect(prometheus.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
            #expect(prometheus.body.contains("outrigger_downstream_requests_total{listener=\"quickstart\"} 2\n"))
            #expect(prometheus.body.contains("outrigger_upstream_responses_total{cluster=\"upstream\",code=\"2xx\"} 2\n"))
            #expect(prometheus.body.contains("outrigger_request_duration_seconds_count{listener=\"quickstart\"} 2\n"))
            #expect(prometheus.body.contains("outrigger_cluster_request_duration_seconds_count{cluster=\"upstream\"} 2\n"))
            #expect(prometheus.body.contains("outrigger_cluster_upstream_response_seconds_count{cluster=\"upstream\"} 2\n"))
            #expect(prometheus.body.contains("outrigger_cluster_request_duration_seconds_bucket{cluster=\"upstream\",le=\"+Inf\"} 2\n"))
            #expect(prometheus.body.contains("# TYPE outrigger_cluster_upstream_response_seconds histogram\n"))
            #expect(prometheus.body.contains("outrigger_cluster_try_duration_seconds_count{cluster=\"upstream\"} 2\n"))
            let routeName = try #require(route["name"] as? String)
            #expect(prometheus.body.contains("outrigger_route_request_duration_seconds_count{listener=\"quickstart\",route=\"\(routeName)\"} 2\n"))
            #expect(prometheus.body.contains("outrigger_route_upstream_response_seconds_count{listener=\"quickstart\",route=\"\(routeName)\"} 2\n"))

            #expect(try await fetch(harness.adminURL + "/stats", ["-X", "POST"]).status == 405)
            #expect(try await fetch(harness.adminURL + "/nope").status == 404)
        }
    }
}
