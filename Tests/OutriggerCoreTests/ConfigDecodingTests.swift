import Foundation
import OutriggerConfig
import Testing

@Suite("Config decoding and validation")
struct ConfigDecodingTests {
    static func fixture(_ name: String) throws -> String {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil))
        return url.path
    }

    /// Decodes YAML expected to be invalid and returns its issues.
    static func issues(_ yaml: String) -> [ConfigIssue] {
        do {
            _ = try SidecarConfig.decode(yaml: yaml, file: "test.yaml")
            Issue.record("expected the config to be rejected")
            return []
        } catch {
            return error.issues
        }
    }

    static let minimalClusters = """
    clusters:
      - name: local
        endpoints: [127.0.0.1:8080]
    """

    @Test func decodesEveryFeatureOfTheValidFixture() throws {
        let config = try SidecarConfig.load(contentsOf: Self.fixture("valid-sidecar.yaml"))
        #expect(config.admin?.address == HostPort(host: "127.0.0.1", port: 15000))
        #expect(config.concurrency == 2)
        #expect(config.drainTimeout == .seconds(5))
        #expect(config.listeners.count == 2)

        let inbound = config.listeners[0]
        #expect(inbound.maxRequestHeadersBytes == 32 * 1024)
        #expect(inbound.maxRequestBodyBytes == 1024 * 1024)
        #expect(inbound.addVia)
        #expect(inbound.virtualHosts == [VirtualHostConfig(name: "default", domains: ["*"], routes: [RouteConfig(destination: .cluster("local"))])])

        let outbound = config.listeners[1]
        #expect(outbound.direction == .outbound)
        #expect(outbound.virtualHosts[0].domains == ["api.example.com", "*.api.example.com"])
        let users = outbound.virtualHosts[0].routes[0]
        #expect(users.name == "users")
        #expect(users.match.path == .prefix("/users"))
        #expect(users.match.methods == ["GET", "POST"])
        #expect(users.match.headers == [
            HeaderMatchConfig(name: "x-tenant", condition: .exact("blue")),
            HeaderMatchConfig(name: "x-debug", condition: .present(false)),
        ])
        #expect(users.prefixRewrite == "/v2/users")
        #expect(users.hostRewrite == "users.internal")
        #expect(users.timeout == .seconds(2))
        #expect(users.requestHeaders == HeaderMutations(add: [HeaderValue(name: "x-added", value: "1")], set: [HeaderValue(name: "x-set", value: "two")], remove: ["x-remove-me"]))
        #expect(users.responseHeaders.set == [HeaderValue(name: "x-served-by", value: "outrigger")])
        let split = outbound.virtualHosts[0].routes[1]
        #expect(split.match.path == .regex("/items/[0-9]+"))
        #expect(split.destination == .weightedClusters([WeightedCluster(cluster: "users", weight: 90), WeightedCluster(cluster: "local", weight: 10)]))
        #expect(outbound.virtualHosts[1].routes[0].match.path == .exact("/exact"))

        let cluster = config.clusters[1]
        #expect(cluster.endpoints == [HostPort(host: "127.0.0.1", port: 9001), HostPort(host: "::1", port: 9002)])
        #expect(cluster.endpointMetadata == [HostPort(host: "::1", port: 9002): EndpointMetadata(weight: 3)])
        #expect(cluster.upstreamProtocol == .http2)
        #expect(cluster.connectTimeout == .milliseconds(250))
        #expect(cluster.timeout == .seconds(30))
        #expect(cluster.dnsRefreshInterval == .seconds(10))
        #expect(cluster.pool == PoolConfig(maxConnectionsPerEndpoint: 8, maxPendingRequests: 16, idleTimeout: .seconds(30)))
        #expect(cluster.loadBalancer == LoadBalancerConfig(policy: .peakEWMA, decay: .seconds(5), defaultRTT: .milliseconds(20)))
        #expect(config.clusters[0].timeout == .seconds(15), "route timeout defaults to 15 s")
        #expect(config.clusters[0].loadBalancer == LoadBalancerConfig(policy: .roundRobin), "round robin by default")
        let hashed = try SidecarConfig.decode(yaml: """
        listeners: [{name: in, address: 127.0.0.1:15006, routes: [{cluster: a}, {cluster: b}]}]
        clusters:
          - {name: a, endpoints: [127.0.0.1:1], loadBalancer: {policy: ring_hash, hashPolicy: {header: X-User}}}
          - {name: b, endpoints: [127.0.0.1:2], loadBalancer: {policy: maglev, hashPolicy: {cookie: session}, tableSize: 251}}
        """, file: "hash.yaml")
        #expect(hashed.clusters[0].loadBalancer == LoadBalancerConfig(policy: .ringHash, hashPolicy: .header("x-user")))
        #expect(hashed.clusters[1].loadBalancer == LoadBalancerConfig(policy: .maglev, hashPolicy: .cookie("session"), maglevTableSize: 251))
    }

    @Test func configDumpRoundTripsThroughJSON() throws {
        let config = try SidecarConfig.load(contentsOf: Self.fixture("valid-sidecar.yaml"))
        let json = try JSONEncoder().encode(config)
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        let clusters = try #require(object["clusters"] as? [[String: Any]])
        #expect(clusters[1]["connectTimeout"] as? String == "250ms")
        #expect(clusters[1]["protocol"] as? String == "http2")
        let endpoints = try #require(clusters[1]["endpoints"] as? [[String: Any]])
        #expect(endpoints.map { $0["address"] as? String } == ["127.0.0.1:9001", "[::1]:9002"])
        #expect(endpoints.map { $0["weight"] as? Int } == [1, 3])
    }

    @Test func unknownKeyGetsLineColumnPathAndSuggestion() {
        let issues = Self.issues("""
        listeners:
          - name: in
            address: 127.0.0.1:15006
            routes:
              - cluster: local
                timout: 5s
        \(Self.minimalClusters)
        """)
        #expect(issues.count == 1)
        #expect(issues.first?.description == "test.yaml:6:9: listeners[0].routes[0].timout: unknown key 'timout'; did you mean 'timeout'?")
    }

    @Test(arguments: [
        ("concurrency: zero", "concurrency", "expected an integer, found 'zero'"),
        ("concurrency: 0", "concurrency", "expected an integer in 1...1024, found 0"),
        ("drainTimeout: 10", "drainTimeout", "expected a duration such as 250ms, 5s or 1m, found '10'"),
        ("drainTimeout: 0s", "drainTimeout", "expected a duration greater than zero, found '0s'"),
        ("admin: {address: nowhere}", "admin.address", "expected HOST:PORT such as 127.0.0.1:8080 or [::1]:8080, found 'nowhere'"),
        ("maxConnections: 0", "maxConnections", "expected an integer in 1...10000000, found 0"),
    ])
    func wrongTypesAndImpossibleValues(line: String, path: String, message: String) {
        let issues = Self.issues("""
        \(line)
        listeners:
          - {name: in, address: 127.0.0.1:15006, routes: [{cluster: local}]}
        \(Self.minimalClusters)
        """)
        #expect(issues.map(\.keyPath) == [path])
        #expect(issues.first?.message == message)
        #expect(issues.first?.line == 1)
    }

    /// Issues of a config whose one cluster `local` has `endpoints` and optionally `loadBalancer` as given
    /// (line 5 and line 6 of the file).
    static func clusterIssues(endpoints: String = "[127.0.0.1:8080]", loadBalancer: String? = nil) -> [ConfigIssue] {
        Self.issues("""
        listeners:
          - {name: in, address: 127.0.0.1:15006, routes: [{cluster: local}]}
        clusters:
          - name: local
            endpoints: \(endpoints)
        \(loadBalancer.map { "    loadBalancer: \($0)" } ?? "")
        """)
    }

    @Test(arguments: [
        ("{policy: least_requests}", "clusters[0].loadBalancer.policy",
         "expected one of round_robin, random, least_request, peak_ewma, ring_hash, maglev, found 'least_requests'; did you mean 'least_request'?"),
        ("{policy: round_robin, decay: 5s}", "clusters[0].loadBalancer.decay", "decay applies to policy peak_ewma only, not round_robin"),
        ("{policy: peak_ewma, defaultRTT: 0ms}", "clusters[0].loadBalancer.defaultRTT", "expected a duration greater than zero, found '0ms'"),
        ("{decay: 5s}", "clusters[0].loadBalancer.policy", "missing required key 'policy'"),
        ("{policy: round_robin, hashPolicy: {header: x-user}}", "clusters[0].loadBalancer.hashPolicy",
         "hashPolicy applies to policies ring_hash and maglev only, not round_robin"),
        ("{policy: ring_hash}", "clusters[0].loadBalancer.policy", "ring_hash needs a hashPolicy"),
        ("{policy: maglev, hashPolicy: {header: x-user, cookie: s}}", "clusters[0].loadBalancer.hashPolicy",
         "expected exactly one of header, cookie or clientAddress, found header and cookie"),
        ("{policy: maglev, hashPolicy: {header: 'x user'}}", "clusters[0].loadBalancer.hashPolicy.header", "expected a header name, found 'x user'"),
        ("{policy: maglev, hashPolicy: {clientAddress: true}, tableSize: 65536}", "clusters[0].loadBalancer.tableSize",
         "expected a prime table size (such as 65537), found 65536"),
        ("{policy: ring_hash, hashPolicy: {clientAddress: true}, tableSize: 101}", "clusters[0].loadBalancer.tableSize",
         "tableSize applies to policy maglev only, not ring_hash"),
    ])
    func badLoadBalancerSettings(value: String, path: String, message: String) {
        let issues = Self.clusterIssues(loadBalancer: value)
        #expect(issues.map(\.keyPath).contains(path), "\(issues)")
        #expect(issues.contains { $0.message.hasPrefix(message) }, "\(issues.map(\.message))")
        #expect(issues.allSatisfy { $0.line == 6 })
    }

    @Test(arguments: [
        ("{address: 127.0.0.1:8080, weight: 0}", "clusters[0].endpoints[0].weight", "expected an integer in 1...1000000, found 0"),
        ("{address: 127.0.0.1:8080, weigth: 2}", "clusters[0].endpoints[0].weigth", "unknown key 'weigth'; did you mean 'weight'?"),
        ("{weight: 2}", "clusters[0].endpoints[0].address", "missing required key 'address'"),
    ])
    func badEndpointEntries(entry: String, path: String, message: String) {
        let issues = Self.clusterIssues(endpoints: "[\(entry)]")
        #expect(issues.map(\.keyPath) == [path], "\(issues)")
        #expect(issues.first.map { $0.message.hasPrefix(message) } == true, "\(issues.map(\.message))")
        #expect(issues.first?.line == 5)
    }

    @Test func connectionDefencesAndTLSPolicyDecode() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificate = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        try "pem\n".write(toFile: certificate, atomically: true, encoding: .utf8)
        try "pem\n".write(toFile: key, atomically: true, encoding: .utf8)
        func yaml(_ tls: String) -> String {
            """
            maxConnections: 5000
            listeners:
              - name: in
                address: 127.0.0.1:15006
                handshakeTimeout: 2s
                maxConnections: 100
                tls: {certificate: \(certificate), privateKey: \(key)\(tls)}
                routes: [{cluster: local}]
            \(Self.minimalClusters)
            """
        }
        let config = try SidecarConfig.decode(yaml: yaml(", minVersion: TLS1.3, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]"), file: "test.yaml")
        #expect(config.maxConnections == 5000)
        #expect(config.listeners[0].handshakeTimeout == .seconds(2) && config.listeners[0].maxConnections == 100)
        #expect(config.listeners[0].tls?.minVersion == .tls13 && config.listeners[0].tls?.cipherSuites == ["ECDHE-RSA-AES128-GCM-SHA256"])
        let defaults = try SidecarConfig.decode(yaml: yaml(""), file: "test.yaml")
        #expect(defaults.listeners[0].tls?.minVersion == .tls12 && defaults.listeners[0].tls?.cipherSuites == TLSConfig.defaultCipherSuites)

        let version = Self.issues(yaml(", minVersion: TLS1.1"))
        #expect(version.map(\.keyPath) == ["listeners[0].tls.minVersion"] && version.first?.message.hasPrefix("expected one of TLS1.2, TLS1.3, found 'TLS1.1'") == true, "\(version)")
        let suite = Self.issues(yaml(", cipherSuites: [ECDHE-RSA-AES128-GCM-SHA265]"))
        #expect(suite.map(\.keyPath) == ["listeners[0].tls.cipherSuites[0]"], "\(suite)")
        #expect(suite.first?.message.hasSuffix("found 'ECDHE-RSA-AES128-GCM-SHA265'; did you mean 'ECDHE-RSA-AES128-GCM-SHA256'?") == true, "\(suite)")
    }

    @Test func overloadSettingsDecodeAndTheirStepsMustBeInOrder() throws {
        func yaml(_ overload: String) -> String {
            """
            overload: \(overload)
            listeners:
              - {name: in, address: 127.0.0.1:15006, overloadPriority: low, routes: [{cluster: local}]}
            \(Self.minimalClusters)
            """
        }
        let config = try SidecarConfig.decode(yaml: yaml("{interval: 100ms, maxMemory: 512MiB, maxActiveRequests: 1000, maxEventLoopDelay: 200ms, refuseRequestsAt: 0.97}"),
                                              file: "test.yaml")
        #expect(config.overload == OverloadConfig(interval: .milliseconds(100), maxMemoryBytes: 512 * 1024 * 1024, maxActiveRequests: 1000,
                                                  maxEventLoopDelay: .milliseconds(200), refuseRequestsAt: 0.97))
        #expect(config.listeners[0].overloadPriority == .low)
        let order = Self.issues(yaml("{disableKeepAliveAt: 0.99}"))
        #expect(order.map(\.keyPath) == ["overload"] && order.first?.message.contains("disableKeepAliveAt ≤ refuseRequestsAt") == true, "\(order)")
        let fraction = Self.issues(yaml("{stopAcceptingAt: lots}"))
        #expect(fraction.map(\.keyPath) == ["overload.stopAcceptingAt"], "\(fraction)")
    }

    @Test func tracingDecodesWithItsDefaultsAndItsMistakesAreNamed() throws {
        func yaml(_ tracing: String) -> String {
            """
            listeners:
              - {name: in, address: 127.0.0.1:15006, \(tracing) routes: [{cluster: local}]}
            \(Self.minimalClusters)
            """
        }
        let defaults = try SidecarConfig.decode(yaml: yaml(""), file: "test.yaml")
        #expect(defaults.listeners[0].tracing == TracingConfig(mode: .participate, sampleRatio: 0.01))
        let forward = try SidecarConfig.decode(yaml: yaml("tracing: {mode: forward, sampleRatio: 0.25},"), file: "test.yaml")
        #expect(forward.listeners[0].tracing == TracingConfig(mode: .forward, sampleRatio: 0.25))
        let percent = try SidecarConfig.decode(yaml: yaml("tracing: {sampleRatio: 5%},"), file: "test.yaml")
        #expect(percent.listeners[0].tracing.sampleRatio == 0.05)

        let ratio = Self.issues(yaml("tracing: {sampleRatio: 2},"))
        #expect(ratio.map(\.keyPath) == ["listeners[0].tracing.sampleRatio"], "\(ratio)")
        #expect(ratio.first?.message == "expected a share from 0 to 1 or a percentage from 0% to 100%, found '2'", "\(ratio)")
        let mode = Self.issues(yaml("tracing: {mode: join},"))
        #expect(mode.map(\.keyPath) == ["listeners[0].tracing.mode"] && mode.first?.message.hasPrefix("expected one of participate, forward") == true, "\(mode)")
        let key = Self.issues(yaml("tracing: {sampling: 1},"))
        #expect(key.map(\.keyPath) == ["listeners[0].tracing.sampling"], "\(key)")
    }

    @Test func traceExportDecodesWithItsDefaultsAndItsMistakesAreNamed() throws {
        func yaml(_ export: String) -> String {
            """
            traceExport: \(export)
            listeners:
              - {name: in, address: 127.0.0.1:15006, routes: [{cluster: local}]}
            \(Self.minimalClusters)
            """
        }
        let otlp = try SidecarConfig.decode(yaml: yaml("{endpoint: 'http://collector:4318/v1/traces'}"), file: "test.yaml")
        #expect(otlp.traceExport == TraceExportConfig(address: HostPort(host: "collector", port: 4318), path: "/v1/traces"))
        let zipkin = try SidecarConfig.decode(yaml: yaml("{endpoint: 'http://[::1]', format: zipkin, serviceName: web, batchSize: 64, maxQueuedSpans: 100, timeout: 2s, flushInterval: 250ms}"),
                                              file: "test.yaml")
        #expect(zipkin.traceExport == TraceExportConfig(format: .zipkin, address: HostPort(host: "::1", port: 9411), path: "/api/v2/spans",
                                                        serviceName: "web", batchSize: 64, maxQueuedSpans: 100, timeout: .seconds(2),
                                                        flushInterval: .milliseconds(250)),
                "the format's usual port and path")
        #expect(try SidecarConfig.decode(yaml: yaml("{endpoint: 'http://c'}"), file: "test.yaml").traceExport?.address.port == 4318)

        let https = Self.issues(yaml("{endpoint: 'https://collector:4318'}"))
        #expect(https.map(\.keyPath) == ["traceExport.endpoint"], "\(https)")
        #expect(https.first?.message == "expected http://HOST:PORT/PATH such as http://127.0.0.1:4318/v1/traces, found 'https://collector:4318'")
        #expect(https.first?.line == 1)
        let missing = Self.issues(yaml("{format: otlp}"))
        #expect(missing.map(\.keyPath) == ["traceExport.endpoint"] && missing.first?.message == "missing required key 'endpoint'", "\(missing)")
        let batch = Self.issues(yaml("{endpoint: 'http://c:1', batchSize: 0}"))
        #expect(batch.map(\.keyPath) == ["traceExport.batchSize"], "\(batch)")
        let interval = Self.issues(yaml("{endpoint: 'http://c:1', flushInterval: soon}"))
        #expect(interval.map(\.keyPath) == ["traceExport.flushInterval"], "\(interval)")
        let format = Self.issues(yaml("{endpoint: 'http://c:1', format: jaeger}"))
        #expect(format.map(\.keyPath) == ["traceExport.format"], "\(format)")
    }

    @Test func anAccessLogInAMissingDirectoryIsAnError() {
        let issues = Self.issues("""
        listeners:
          - name: in
            address: 127.0.0.1:15006
            accessLog: {path: /nonexistent-\(UUID().uuidString)/access.log}
            routes: [{cluster: local}]
        \(Self.minimalClusters)
        """)
        #expect(issues.map(\.keyPath) == ["listeners[0].accessLog.path"], "\(issues)")
        #expect(issues.first?.message.contains("is not a directory") == true, "\(issues)")
    }

    @Test func upstreamTLSAndClientCertificatesDecodeAndTheirMistakesAreNamed() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        for name in ["cert.pem", "key.pem", "ca.pem"] {
            try "pem\n".write(toFile: directory.appendingPathComponent(name).path, atomically: true, encoding: .utf8)
        }
        let path = directory.path
        func yaml(listener: String = "", cluster: String) -> String {
            """
            listeners:
              - name: in
                address: 127.0.0.1:15006
                tls: {certificate: \(path)/cert.pem, privateKey: \(path)/key.pem\(listener)}
                routes: [{cluster: up}]
            clusters:
              - name: up
                endpoints: [127.0.0.1:8443]
                protocol: http2
                tls: \(cluster)
            """
        }
        let config = try SidecarConfig.decode(yaml: yaml(
            listener: ", clientCertificates: {caFile: \(path)/ca.pem, subjectAltNames: [spiffe://mesh/sa/web]}",
            cluster: "{sni: api.internal, caFile: \(path)/ca.pem, certificate: \(path)/cert.pem, privateKey: \(path)/key.pem, subjectAltNames: [spiffe://mesh/sa/api]}"),
            file: "test.yaml")
        #expect(config.listeners[0].tls?.clientCertificates == TLSConfig.ClientCertificateConfig(caFile: "\(path)/ca.pem", subjectAltNames: ["spiffe://mesh/sa/web"]))
        #expect(config.clusters[0].tls == UpstreamTLSConfig(sni: "api.internal", caFile: "\(path)/ca.pem", certificate: "\(path)/cert.pem",
                                                             privateKey: "\(path)/key.pem", subjectAltNames: ["spiffe://mesh/sa/api"]))
        #expect(try SidecarConfig.decode(yaml: yaml(cluster: "{}"), file: "test.yaml").clusters[0].tls == UpstreamTLSConfig())

        let halfPair = Self.issues(yaml(cluster: "{certificate: \(path)/cert.pem}"))
        #expect(halfPair.map(\.keyPath) == ["clusters[0].tls"] && halfPair.first?.message.contains("'privateKey'") == true, "\(halfPair)")
        let missing = Self.issues(yaml(cluster: "{caFile: \(path)/nope.pem}"))
        #expect(missing.map(\.keyPath) == ["clusters[0].tls.caFile"], "\(missing)")
        let contradiction = Self.issues(yaml(cluster: "{insecureSkipVerify: true, subjectAltNames: [spiffe://x]}"))
        #expect(contradiction.map(\.keyPath) == ["clusters[0].tls.insecureSkipVerify"], "\(contradiction)")
        let noCA = Self.issues(yaml(listener: ", clientCertificates: {subjectAltNames: [spiffe://x]}", cluster: "{}"))
        #expect(noCA.map(\.keyPath) == ["listeners[0].tls.clientCertificates.caFile"] && noCA.first?.message.contains("caFile") == true, "\(noCA)")
    }

    @Test func aWildcardAndASpecificAddressOnOnePortAreAnError() {
        let issues = Self.issues("""
        listeners:
          - {name: all, address: 0.0.0.0:15006, routes: [{cluster: local}]}
          - {name: loopback, address: 127.0.0.1:15006, routes: [{cluster: local}]}
          - {name: other, address: 127.0.0.1:15007, routes: [{cluster: local}]}
        \(Self.minimalClusters)
        """)
        #expect(issues.map(\.keyPath) == ["listeners[1].address"], "\(issues)")
        #expect(issues.first?.line == 3)
        #expect(issues.first?.message.hasPrefix("port 15006 is also taken by listeners[0] (0.0.0.0:15006)") == true, "\(issues)")
    }

    @Test func accessLogDecodesWithTextByDefaultAndAFileNextToTheConfig() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-logs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory + "/logs", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = try SidecarConfig.decode(yaml: """
        listeners:
          - {name: a, address: 127.0.0.1:1, routes: [{cluster: local}], accessLog: {path: \(directory)/a.log, format: json}}
          - {name: b, address: 127.0.0.1:2, routes: [{cluster: local}], accessLog: {path: stdout}}
          - {name: c, address: 127.0.0.1:3, routes: [{cluster: local}], accessLog: {path: logs/c.log, format: text}}
          - {name: d, address: 127.0.0.1:4, routes: [{cluster: local}]}
        \(Self.minimalClusters)
        """, file: directory + "/sidecar.yaml")
        #expect(config.listeners.map(\.accessLog) == [
            AccessLogConfig(path: "\(directory)/a.log", format: .json),
            AccessLogConfig(path: "stdout", format: .text),
            AccessLogConfig(path: "\(directory)/logs/c.log", format: .text),
            nil,
        ])

        let json = try JSONEncoder().encode(config)
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        let listeners = try #require(object["listeners"] as? [[String: Any]])
        #expect(listeners[0]["accessLog"] as? [String: String] == ["path": "\(directory)/a.log", "format": "json"], "/config_dump shows it")
        #expect(listeners[3]["accessLog"] == nil)
    }

    @Test(arguments: [
        ("{path: stdout, format: xml}", "listeners[0].accessLog.format", "expected one of text, json, found 'xml'"),
        ("{path: stdout, format: [json]}", "listeners[0].accessLog.format", "expected a string, found a list"),
        ("{path: ''}", "listeners[0].accessLog.path", "expected a non-empty string"),
        ("{path: ~}", "listeners[0].accessLog.path", "expected a string, found nothing"),
        ("{path: {file: a.log}}", "listeners[0].accessLog.path", "expected a string, found a mapping"),
        ("{path: \"a\\0b.log\"}", "listeners[0].accessLog.path", "expected a file path without NUL"),
        ("{format: json}", "listeners[0].accessLog.path", "missing required key 'path'"),
        ("{path: stdout, fromat: json}", "listeners[0].accessLog.fromat", "unknown key 'fromat'; did you mean 'format'?"),
        ("stdout", "listeners[0].accessLog", "expected a mapping with keys path, format, found 'stdout'"),
    ])
    func badAccessLogSettings(value: String, path: String, message: String) {
        let issues = Self.issues("""
        listeners:
          - name: in
            address: 127.0.0.1:15006
            accessLog: \(value)
            routes: [{cluster: local}]
        \(Self.minimalClusters)
        """)
        #expect(issues.map(\.keyPath) == [path], "\(issues)")
        #expect(issues.first?.message == message)
        #expect(issues.first?.line == 4)
    }

    @Test func endpointsFileIsResolvedNextToTheConfigAndCheckedWhenPresent() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-ef-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let yaml = """
        listeners: [{name: in, address: 127.0.0.1:15006, routes: [{cluster: users}]}]
        clusters:
          - {name: users, endpointsFile: users.endpoints}
        """
        let config = try SidecarConfig.decode(yaml: yaml, file: directory.appendingPathComponent("sidecar.yaml").path)
        #expect(config.clusters[0].endpointsFile == directory.appendingPathComponent("users.endpoints").path)
        #expect(config.clusters[0].endpoints.isEmpty, "a missing file is waited for, not an error")

        try "10.0.0.5:8080\nbroken\n".write(to: directory.appendingPathComponent("users.endpoints"), atomically: true, encoding: .utf8)
        do {
            _ = try SidecarConfig.decode(yaml: yaml, file: directory.appendingPathComponent("sidecar.yaml").path)
            Issue.record("expected the broken endpoints file to be reported")
        } catch {
            #expect(error.issues.map(\.keyPath) == ["clusters[0].endpointsFile"])
            #expect(error.issues.first?.message.contains("users.endpoints:2:1: expected HOST:PORT") == true, "\(error)")
        }
    }

    @Test func danglingClusterReferenceIsAnError() {
        let issues = Self.issues("""
        listeners:
          - name: in
            address: 127.0.0.1:15006
            routes:
              - cluster: locl
              - weightedClusters: [{cluster: local, weight: 1}, {cluster: missing, weight: 2}]
        \(Self.minimalClusters)
        """)
        #expect(issues.map(\.description) == [
            "test.yaml:5:18: listeners[0].routes[0].cluster: unknown cluster 'locl'; did you mean 'local'?",
            "test.yaml:6:67: listeners[0].routes[1].weightedClusters[1].cluster: unknown cluster 'missing'; defined clusters: local",
        ])
    }

    @Test func reportsEveryProblemAtOnce() {
        let issues = Self.issues("""
        listeners:
          - name: in
            address: 127.0.0.1
            routes:
              - match: {prefix: api, method: GET}
                cluster: local
              - cluster: local
                weightedClusters: []
          - name: in
            address: 127.0.0.1:1
            routes: []
        clusters:
          - name: local
            endpoints: []
            protocol: http3
            pool: {maxConnectionsPerEndpoint: 0}
        """)
        let paths = issues.map(\.keyPath)
        #expect(paths.contains("listeners[0].address"))
        #expect(paths.contains("listeners[0].routes[0].match.prefix"))
        #expect(issues.contains { $0.keyPath == "listeners[0].routes[0].match.method" && $0.message.contains("did you mean 'methods'") })
        #expect(paths.contains("listeners[0].routes[1].cluster"))
        #expect(paths.contains("clusters[0].endpoints"))
        #expect(issues.contains { $0.keyPath == "clusters[0].protocol" && $0.message.hasPrefix("expected one of http1, http2, found 'http3'") })
        #expect(paths.contains("clusters[0].pool.maxConnectionsPerEndpoint"))
        #expect(issues == issues.sorted { ($0.line, $0.column) < ($1.line, $1.column) }, "issues are reported in file order")
    }

    @Test func duplicateNamesAreErrors() {
        let issues = Self.issues("""
        listeners:
          - {name: a, address: 127.0.0.1:1, routes: [{cluster: local}]}
          - {name: a, address: 127.0.0.1:2, routes: [{cluster: local}]}
        clusters:
          - {name: local, endpoints: [127.0.0.1:8080]}
          - {name: local, endpoints: [127.0.0.1:8081]}
        """)
        #expect(issues.map(\.message) == ["duplicate listener name 'a'", "duplicate cluster name 'local'"])
        #expect(issues.map(\.line) == [3, 6])
    }

    @Test func invalidRegexAndHeaderNamesAreErrors() {
        let issues = Self.issues("""
        listeners:
          - name: in
            address: 127.0.0.1:15006
            routes:
              - match: {regex: "/items/[0-9"}
                cluster: local
                requestHeaders: {add: {"bad header": x}}
        \(Self.minimalClusters)
        """)
        #expect(issues.map(\.keyPath) == ["listeners[0].routes[0].match.regex", "listeners[0].routes[0].requestHeaders.add"])
    }

    @Test func syntaxErrorsCarryTheirPosition() {
        let issues = Self.issues("listeners:\n  - name: [unclosed\n")
        #expect(issues.count == 1)
        #expect(issues[0].message.hasPrefix("invalid YAML"))
        #expect(issues[0].line >= 2)
    }

    @Test func emptyFileIsAnError() {
        #expect(Self.issues("").first?.message.contains("empty") == true)
    }

    @Test func fileLevelErrorsSayWhatAndWhere() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-files-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func issue(_ path: String) -> String {
            do {
                _ = try SidecarConfig.load(contentsOf: path)
                return "accepted"
            } catch {
                return error.issues.map(\.description).joined(separator: "\n")
            }
        }
        #expect(issue("/nonexistent/sidecar.yaml") == "/nonexistent/sidecar.yaml:1:1: no such file")
        #expect(issue(directory.path) == "\(directory.path):1:1: is a directory; expected a YAML file")
        let latin1 = directory.appendingPathComponent("latin1.yaml")
        try Data("listeners:\n  - name: caf".utf8 + [0xE9] + Data("\n".utf8)).write(to: latin1)
        #expect(issue(latin1.path) == "\(latin1.path):2:14: not UTF-8 text: byte 0xE9 at line 2, column 14; config files are UTF-8")
        let duplicate = directory.appendingPathComponent("duplicate.yaml")
        try """
        listeners:
          - name: a
            address: 127.0.0.1:1
            routes: [{cluster: c}]
            name: b
        clusters: [{name: c, endpoints: [127.0.0.1:2]}]

        """.write(to: duplicate, atomically: true, encoding: .utf8)
        #expect(issue(duplicate.path) == "\(duplicate.path):5:5: duplicate key 'name' (first at line 2)")
    }

    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)), ("5s", .seconds(5)), ("2m", .seconds(120)), ("1h", .seconds(3600)),
        ("1.5s", .milliseconds(1500)), ("100us", .microseconds(100)),
    ])
    func durationsParseAndFormat(text: String, expected: Duration) {
        #expect(ConfigDuration.parse(text) == expected)
        #expect(ConfigDuration.parse(ConfigDuration.format(expected)) == expected)
    }

    @Test(arguments: ["", "5", "s", "5 s", "-1s", "5x"])
    func malformedDurationsAreRejected(text: String) {
        #expect(ConfigDuration.parse(text) == nil)
    }

    @Test func hostPortParsing() {
        #expect(HostPort(parsing: "127.0.0.1:80") == HostPort(host: "127.0.0.1", port: 80))
        #expect(HostPort(parsing: "[::1]:8080") == HostPort(host: "::1", port: 8080))
        #expect(HostPort(parsing: "svc.local:443")?.isIPLiteral == false)
        #expect(HostPort(parsing: "10.0.0.1:1")?.isIPLiteral == true)
        for bad in ["127.0.0.1", "::1:80", "host:99999", ":80", "host:port", "[::1]80"] {
            #expect(HostPort(parsing: bad) == nil, "\(bad)")
        }
        #expect(HostPort(host: "::1", port: 80).description == "[::1]:80")
    }

    @Test func quickStartBuildsOneListenerAndOneCluster() {
        let config = SidecarConfig.quickStart(
            listen: HostPort(host: "127.0.0.1", port: 15006),
            upstreams: [HostPort(host: "127.0.0.1", port: 8080), HostPort(host: "127.0.0.1", port: 8081)],
            admin: nil, concurrency: 3
        )
        #expect(config.listeners.count == 1)
        #expect(config.clusters.first?.endpoints.count == 2)
        #expect(config.concurrency == 3)
        #expect(config.admin == nil)
    }
}
