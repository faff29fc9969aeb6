import OutriggerConfig
import Testing

@Suite("Config: health checks, zones, priorities, panic threshold, slow start")
struct EndpointSelectionConfigTests {
    /// A config whose one cluster has `extra` YAML lines (indented under the cluster, from line 6).
    static func config(_ extra: String, top: String = "") throws(ConfigErrors) -> SidecarConfig {
        try SidecarConfig.decode(yaml: """
        \(top.isEmpty ? "concurrency: 1" : top)
        listeners: [{name: in, address: 127.0.0.1:15006, routes: [{cluster: local}]}]
        clusters:
          - name: local
            endpoints: [127.0.0.1:8080, {address: 127.0.0.1:8081, zone: b, priority: 1}]
        \(extra.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
        """, file: "test.yaml")
    }

    static func issues(_ extra: String) -> [ConfigIssue] {
        do {
            _ = try config(extra)
            Issue.record("expected the config to be rejected")
            return []
        } catch {
            return error.issues
        }
    }

    @Test func decodesEverySetting() throws {
        let config = try Self.config("""
        healthChecks:
          type: http
          path: /healthz
          method: head
          expectedStatuses: [200, 204-299]
          bodyContains: ok
          interval: 2s
          unhealthyInterval: 500ms
          timeout: 250ms
          initialJitter: 1s
          jitter: 100ms
          healthyThreshold: 1
          unhealthyThreshold: 2
        endpointDrainTimeout: 30s
        loadBalancer:
          policy: least_request
          panicThreshold: 30
          slowStart: {window: 20s, aggression: 2, minWeightPercent: 5}
        """, top: "zone: a")
        #expect(config.zone == "a")
        let cluster = config.clusters[0]
        #expect(cluster.endpointMetadata == [HostPort(host: "127.0.0.1", port: 8081): EndpointMetadata(zone: "b", priority: 1)])
        #expect(cluster.healthCheck == HealthCheckConfig(
            kind: .http, interval: .seconds(2), unhealthyInterval: .milliseconds(500), timeout: .milliseconds(250),
            initialJitter: .seconds(1), jitter: .milliseconds(100), healthyThreshold: 1, unhealthyThreshold: 2,
            path: "/healthz", method: "HEAD", expectedStatuses: [200...200, 204...299], bodyContains: "ok"))
        #expect(cluster.endpointDrainTimeout == .seconds(30))
        #expect(cluster.loadBalancer.panicThreshold == 30)
        #expect(cluster.loadBalancer.slowStart == .init(window: .seconds(20), aggression: 2, minWeightPercent: 5))

        let grpc = try Self.config("healthChecks: {type: grpc, service: users.v1.Users}").clusters[0].healthCheck
        #expect(grpc?.kind == .grpc && grpc?.service == "users.v1.Users")
        #expect(try Self.config("healthChecks: {type: tcp}").clusters[0].healthCheck == HealthCheckConfig(kind: .tcp))
        let cookie = try Self.config("loadBalancer: {policy: ring_hash, hashPolicy: {cookie: session, ttl: 1h}}").clusters[0]
        #expect(cookie.loadBalancer.hashPolicy == .cookie("session", ttl: .seconds(3600)))
    }

    @Test(arguments: [
        ("healthChecks: {type: http, path: /h, interval: 0s}", "clusters[0].healthChecks.interval", "expected a duration greater than zero"),
        ("healthChecks: {type: http, path: /h, unhealthyThreshold: 0}", "clusters[0].healthChecks.unhealthyThreshold",
         "expected an integer in 1...1000, found 0"),
        ("healthChecks: {type: http}", "clusters[0].healthChecks.path", "missing required key 'path'"),
        ("healthChecks: {type: http, path: health}", "clusters[0].healthChecks.path", "expected a path starting with '/'"),
        ("healthChecks: {type: htp, path: /h}", "clusters[0].healthChecks.type", "expected one of http, tcp, grpc, found 'htp'"),
        ("healthChecks: {type: tcp, path: /h}", "clusters[0].healthChecks.path", "path does not apply to a tcp health check"),
        ("healthChecks: {type: grpc, bodyContains: ok}", "clusters[0].healthChecks.bodyContains", "bodyContains does not apply to a grpc"),
        ("healthChecks: {type: http, path: /h, expectedStatuses: [200-99]}", "clusters[0].healthChecks.expectedStatuses[0]",
         "expected a status such as 200 or a range such as 200-299"),
        ("healthChecks: {type: http, path: /h, interval: 1s, timeout: 2s}", "clusters[0].healthChecks.timeout",
         "expected a timeout no longer than the interval (1s)"),
        ("loadBalancer: {policy: round_robin, panicThreshold: 101}", "clusters[0].loadBalancer.panicThreshold",
         "expected an integer in 0...100, found 101"),
        ("loadBalancer: {policy: maglev, hashPolicy: {clientAddress: true}, slowStart: {window: 10s}}", "clusters[0].loadBalancer.slowStart",
         "slowStart applies to round_robin, random, least_request and peak_ewma, not maglev"),
        ("loadBalancer: {policy: random, slowStart: {window: 10s, aggression: 0}}", "clusters[0].loadBalancer.slowStart.aggression",
         "expected a number greater than 0"),
        ("loadBalancer: {policy: ring_hash, hashPolicy: {header: x-user, ttl: 1h}}", "clusters[0].loadBalancer.hashPolicy.ttl",
         "ttl applies to a cookie hash policy only"),
        ("endpointDrainTimeout: -1s", "clusters[0].endpointDrainTimeout", "expected a duration such as 250ms"),
    ])
    func impossibleSettingsAreErrors(yaml: String, path: String, message: String) {
        let issues = Self.issues(yaml)
        #expect(issues.map(\.keyPath).contains(path), "\(issues)")
        #expect(issues.contains { $0.message.hasPrefix(message) }, "\(issues.map(\.message))")
        #expect(issues.allSatisfy { $0.line == 6 }, "\(issues)")
    }

    @Test func endpointEntriesCheckZoneAndPriority() {
        let issues = ConfigDecodingTests.clusterIssues(endpoints: "[{address: 127.0.0.1:8080, priority: -1, zone: ''}]")
        #expect(issues.map(\.keyPath).sorted() == ["clusters[0].endpoints[0].priority", "clusters[0].endpoints[0].zone"], "\(issues)")
    }

    @Test func quickStartFlags() {
        #expect(QuickStartFlag.healthCheck("http:/healthz") == HealthCheckConfig(kind: .http, path: "/healthz"))
        #expect(QuickStartFlag.healthCheck("tcp") == HealthCheckConfig(kind: .tcp))
        #expect(QuickStartFlag.healthCheck("grpc") == HealthCheckConfig(kind: .grpc))
        #expect(QuickStartFlag.healthCheck("grpc:users.v1.Users") == HealthCheckConfig(kind: .grpc, service: "users.v1.Users"))
        #expect(QuickStartFlag.healthCheck("http:healthz") == nil)
        #expect(QuickStartFlag.healthCheck("udp") == nil)
        #expect(QuickStartFlag.hashPolicy("header:X-User") == .header("x-user"))
        #expect(QuickStartFlag.hashPolicy("cookie:session") == .cookie("session"))
        #expect(QuickStartFlag.hashPolicy("client-address") == .clientAddress)
        #expect(QuickStartFlag.hashPolicy("header:") == nil)
        #expect(QuickStartFlag.hashPolicy("path:/x") == nil)
    }
}
