import Foundation
import OutriggerConfig
import OutriggerControl
import OutriggerXDS
import SwiftProtobuf
import Testing

@Suite("xDS translation: our config to Envoy's resources and back")
struct XDSTranslationTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let sample = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("config/sidecar.yaml").path

    /// Every resource of a config, loaded into a decoder as a sidecar would hold them.
    static func decoder(for config: SidecarConfig) throws -> XDSDecoder {
        var decoder = XDSDecoder()
        for resource in try XDSEncoder.resources(listeners: config.listeners, clusters: config.clusters) {
            decoder[resource.type][resource.name] = resource.body
        }
        return decoder
    }

    static func sorted(_ config: SidecarConfig) -> SidecarConfig {
        var config = config
        config.listeners.sort { $0.name < $1.name }
        config.clusters.sort { $0.name < $1.name }
        return config
    }

    @Test(arguments: ["sample", "fixture", "policies"])
    func aConfigSurvivesTheRoundTrip(_ which: String) throws {
        let original: SidecarConfig = switch which {
        case "sample": try SidecarConfig.load(contentsOf: Self.sample)
        case "fixture": try SidecarConfig.load(contentsOf: Self.fixtures.appendingPathComponent("valid-sidecar.yaml").path)
        default: try SidecarConfig.decode(yaml: Self.policies, file: "policies.yaml")
        }
        let decoder = try Self.decoder(for: original)
        #expect(try decoder.isComplete())
        let back = try decoder.config(base: original)
        #expect(Self.sorted(back) == Self.sorted(original))
    }

    static let policies = """
    listeners:
      - name: out
        address: 127.0.0.1:15001
        direction: outbound
        maxRequestHeadersBytes: 10000
        maxRequestBodyBytes: 1MiB
        trustOverrideHeaders: true
        requestHeadersTimeout: 3s
        idleTimeout: 90s
        handshakeTimeout: 4s
        maxConnections: 500
        sendTimeout: 20s
        rapidReset: {maxResetsPerAddress: 200, window: 10s, refuseFor: 2m}
        overloadPriority: high
        tracing: {sampleRatio: 25%}
        routes:
          - name: api
            match:
              regex: "^/api/v[0-9]+/.*"
              methods: [GET, HEAD]
              headers:
                - {name: x-absent, present: false}
                - {name: x-prefix, prefix: abc}
            cluster: api
            hostRewrite: api.internal
            timeout: 2s
            retries:
              attempts: 3
              retryOn: [5xx, reset, unavailable]
              retriableStatusCodes: [409]
              perTryTimeout: 500ms
              backoff: {base: 10ms, max: 100ms}
              retryAfterMax: 2s
              replayBufferBytes: 4096
              retryNonIdempotent: true
              hedgeOnPerTryTimeout: true
            fallback: {status: 503, headers: {x-why: degraded}, body: sorry}
            requestHeaders: {add: {x-a: "1"}, set: {x-b: "2"}, remove: [x-c]}
          - match: {path: /exact, methods: [POST]}
            prefixRewrite: /other
            cluster: hashed
            fallback: {cluster: api}
    clusters:
      - name: api
        protocol: http2
        endpoints:
          - {address: 127.0.0.1:9001, weight: 3, zone: a}
          - {address: 127.0.0.1:9002, zone: b, priority: 1}
        connectTimeout: 300ms
        timeout: 7s
        loadBalancer: {policy: peak_ewma, decay: 5s, defaultRTT: 20ms, panicThreshold: 30, slowStart: {window: 30s, aggression: 1.5, minWeightPercent: 20}}
        pool: {maxConnectionsPerEndpoint: 8, maxPendingRequests: 16, idleTimeout: 20s}
        healthChecks: {type: http, path: /healthz, method: HEAD, host: api, expectedStatuses: ["200", "204-206"], bodyContains: ok, interval: 2s, unhealthyInterval: 4s, timeout: 500ms, jitter: 100ms, initialJitter: 1s, healthyThreshold: 3, unhealthyThreshold: 4}
        endpointDrainTimeout: 20s
        retryBudget: {percent: 30, minRetriesPerSecond: 5, window: 20s}
        outlierDetection: {consecutive5xx: 4, consecutiveGatewayFailure: 2, baseEjectionTime: 10s, maxEjectionTime: 100s, maxEjectionPercent: 40, interval: 5s, failurePercentageThreshold: 70, successRateStdevFactor: 1500}
        limits: {maxRequests: 500, maxActiveRetries: 7, maxConnections: 90, maxPendingRequests: 80}
        breakers: {consecutiveFailures: 4, failureRatePercent: 50, minimumRequests: 10, window: 5s, openTime: 2s, maxOpenTime: 20s, halfOpenRequests: 2}
        streamIdleTimeout: 40s
      - name: hashed
        endpoints: [127.0.0.1:9003]
        loadBalancer: {policy: maglev, tableSize: 65537, hashPolicy: {cookie: session, ttl: 1h}}
        healthChecks: {type: grpc, service: api.v1, host: api}
    """

    /// TLS on both sides: a listener that requires client certificates, and clusters that verify against a CA
    /// file (with a client certificate and SPIFFE ids), against the system's roots, or not at all. The files are
    /// read on the sidecar, so they must exist where the round trip is decoded.
    @Test func tlsSurvivesTheRoundTrip() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-xds-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        for name in ["ca", "cert", "key"] { try "PEM".write(to: directory.appendingPathComponent("\(name).pem"), atomically: true, encoding: .utf8) }
        let path = { (name: String) in directory.appendingPathComponent("\(name).pem").path }
        let yaml = """
        listeners:
          - name: in
            address: 127.0.0.1:15006
            tls: {certificate: \(path("cert")), privateKey: \(path("key")), minVersion: TLS1.3,
                  clientCertificates: {caFile: \(path("ca")), subjectAltNames: [spiffe://mesh/sa/web, web.internal]}}
            routes: [{cluster: pinned}]
        clusters:
          - name: pinned
            endpoints: [127.0.0.1:9001]
            tls: {sni: api.internal, caFile: \(path("ca")), certificate: \(path("cert")), privateKey: \(path("key")),
                  subjectAltNames: [spiffe://mesh/sa/api, api.internal], minVersion: TLS1.3}
          - name: system
            endpoints: [127.0.0.1:9002]
            tls: {sni: example.com}
          - name: unverified
            endpoints: [127.0.0.1:9003]
            tls: {insecureSkipVerify: true}
        """
        let original = try SidecarConfig.decode(yaml: yaml, file: directory.appendingPathComponent("sidecar.yaml").path)
        let decoder = try Self.decoder(for: original)
        #expect(try decoder.config(base: original).clusters.sorted { $0.name < $1.name } == original.clusters.sorted { $0.name < $1.name })
        #expect(try decoder.config(base: original).listeners == original.listeners)

        // A file the sidecar cannot read is its NACK, naming the cluster and the key.
        var missing = original
        missing.clusters[0].tls?.caFile = path("absent")
        let rejection = try #require(throws: XDSRejection.self) { try Self.decoder(for: missing).config(base: original) }
        #expect(rejection.type == .cluster && rejection.name == "pinned", "\(rejection)")
        #expect(rejection.message.hasPrefix("tls.caFile: expected a readable PEM file"), "\(rejection)")
    }

    /// What Envoy's UpstreamTlsContext can say and we do not do is refused by name, never dropped.
    @Test func tlsWeDoNotImplementIsRefused() throws {
        let config = try SidecarConfig.decode(yaml: Self.policies, file: "policies.yaml")
        var decoder = try Self.decoder(for: config)
        func refusal(_ change: (inout Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext) -> Void) throws -> String {
            var context = Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext()
            context.commonTlsContext.validationContext.systemRootCerts = .init()
            change(&context)
            var cluster = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: decoder.clusters["api"]!.value)
            cluster.transportSocket.name = XDSNames.tlsTransportSocket
            cluster.transportSocket.typedConfig = try Google_Protobuf_Any(message: context)
            decoder.clusters["api"] = try Google_Protobuf_Any(message: cluster)
            return try #require(throws: XDSRejection.self) { try decoder.config(base: config) }.message
        }
        #expect(try refusal { $0.commonTlsContext.tlsParams.tlsMinimumProtocolVersion = .tlsv11 }
                == "transport_socket.common_tls_context.tls_params.tls_minimum_protocol_version: TLS 1.2 is the oldest allowed")
        #expect(try refusal {
            var matcher = Envoy_Extensions_TransportSockets_Tls_V3_SubjectAltNameMatcher()
            matcher.sanType = .uri
            matcher.matcher.prefix = "spiffe://mesh/"
            $0.commonTlsContext.validationContext.matchTypedSubjectAltNames = [matcher]
        } == "transport_socket.common_tls_context.validation_context.match_typed_subject_alt_names[0]: only URI and DNS names matched exactly are implemented")
        #expect(try refusal { $0.commonTlsContext.validationContext = .init() }
                == "transport_socket.common_tls_context.validation_context: expected trusted_ca (a filename) or system_root_certs")
        // An inline certificate (DataSource field 3, inline_string) is a field this build does not declare.
        let inline = try refusal {
            // certificate_chain (field 1) holding a DataSource whose field 3 is "A".
            let pair = try! Envoy_Extensions_TransportSockets_Tls_V3_TlsCertificate(serializedBytes: [0x0A, 0x03, 0x1A, 0x01, 0x41] as [UInt8])
            $0.commonTlsContext.tlsCertificates = [pair]
        }
        #expect(inline == "transport_socket.typed_config: field 3 of envoy.config.core.v3.DataSource is not implemented by Outrigger", "the nested message is named")
    }

    @Test func aFieldWeDoNotImplementIsRefusedByNumber() throws {
        let config = try SidecarConfig.decode(yaml: Self.policies, file: "policies.yaml")
        var decoder = try Self.decoder(for: config)
        // Field 38 of Cluster is cluster_type (a custom cluster), which we do not declare.
        var bytes = [UInt8](decoder.clusters["api"]!.value)
        bytes += [0xB2, 0x02, 0x00]  // tag (38 << 3 | 2) as a varint, length 0
        decoder.clusters["api"]!.value = Data(bytes)
        #expect(throws: XDSRejection(type: .cluster, name: "api", message: "field 38 of envoy.config.cluster.v3.Cluster is not implemented by Outrigger")) {
            try decoder.config(base: config)
        }
    }

    @Test func invalidValuesAreRefusedWithTheResourceAndKey() throws {
        var config = try SidecarConfig.decode(yaml: Self.policies, file: "policies.yaml")
        config.clusters[0].outlierDetection?.maxEjectionPercent = 150
        let decoder = try Self.decoder(for: config)
        let rejection = try #require(throws: XDSRejection.self) { try decoder.config(base: config) }
        #expect(rejection.type == .cluster)
        #expect(rejection.name == "api")
        #expect(rejection.message == "outlierDetection.maxEjectionPercent: expected an integer in 0...100, found 150", "\(rejection)")
    }

    @Test func aRouteToAClusterNotSentIsRefused() throws {
        let config = try SidecarConfig.decode(yaml: Self.policies, file: "policies.yaml")
        var decoder = try Self.decoder(for: config)
        decoder.clusters["hashed"] = nil
        decoder.endpoints["hashed"] = nil
        let rejection = try #require(throws: XDSRejection.self) { try decoder.config(base: config) }
        #expect(rejection.type == .route)
        #expect(rejection.name == "out")
        #expect(rejection.message.contains("unknown cluster 'hashed'"), "\(rejection)")
    }

    @Test func aListenerWaitsForItsRoutes() throws {
        let config = try SidecarConfig.decode(yaml: Self.policies, file: "policies.yaml")
        var decoder = try Self.decoder(for: config)
        decoder.routes = [:]
        #expect(try decoder.isComplete() == false)
        #expect(try decoder.routeNames() == ["out"])
        try decoder.checkEach(arrived: .listener, names: ["out"])
    }

    @Test func aSidecarFileCanNameItsControlPlane() throws {
        let config = try SidecarConfig.decode(yaml: """
        listeners: [{name: outbound, address: 127.0.0.1:0, direction: outbound, routes: []}]
        controlPlane:
          addresses: [127.0.0.1:15010, 127.0.0.2:15010]
          node: web-1
          service: web
          app: 127.0.0.1:8080
          stateDir: /var/lib/outrigger
          drainNotice: 2s
        """, file: "sidecar.yaml")
        #expect(config.controlPlane == ControlPlaneConfig(addresses: [HostPort(host: "127.0.0.1", port: 15010), HostPort(host: "127.0.0.2", port: 15010)],
                                                          node: "web-1", service: "web", app: HostPort(host: "127.0.0.1", port: 8080),
                                                          stateDirectory: "/var/lib/outrigger", drainNotice: .seconds(2)))
        let errors = try #require(throws: ConfigErrors.self) {
            try SidecarConfig.decode(yaml: """
            listeners: [{name: outbound, address: 127.0.0.1:0, routes: []}]
            controlPlane:
              addresses: [nowhere]
              service: web
              ca: /does/not/exist.pem
            """, file: "sidecar.yaml")
        }
        #expect(errors.issues.map(\.description) == [
            "sidecar.yaml:3:3: controlPlane.node: missing required key 'node'",
            "sidecar.yaml:3:15: controlPlane.addresses[0]: expected HOST:PORT such as 127.0.0.1:8080 or [::1]:8080, found 'nowhere'",
            "sidecar.yaml:5:7: controlPlane.ca: expected a readable PEM file, but '/does/not/exist.pem' cannot be read",
        ])
    }

    @Test func aMeshDirectoryIsOneMesh() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-mesh-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "services:\n  - name: users\n    endpoints: [127.0.0.1:9001]\n    routes: [{cluster: orders}]\n"
            .write(to: directory.appendingPathComponent("a.yaml"), atomically: true, encoding: .utf8)
        try "services:\n  - name: orders\n    endpoints: [127.0.0.1:9002]\n"
            .write(to: directory.appendingPathComponent("b.yaml"), atomically: true, encoding: .utf8)
        let mesh = try MeshConfig.load(contentsOf: directory.path)
        #expect(mesh.services.map(\.name) == ["users", "orders"], "a route may name a service of another file")

        try "services:\n  - name: users\n    endpoints: []\n    routes: [{cluster: nobody}]\n"
            .write(to: directory.appendingPathComponent("c.yaml"), atomically: true, encoding: .utf8)
        let errors = try #require(throws: ConfigErrors.self) { try MeshConfig.load(contentsOf: directory.path) }
        let c = directory.appendingPathComponent("c.yaml").path
        #expect(errors.issues.map(\.description) == [
            "\(c):2:11: services: service 'users' is already defined in \(directory.appendingPathComponent("a.yaml").path)",
            "\(c):4:24: services[0].routes[0].cluster: unknown service 'nobody'",
        ])
    }

    @Test func meshFileErrorsHaveLineAndKeyPath() throws {
        let yaml = """
        services:
          - name: users
            endpoints: [127.0.0.1:9001]
            routes:
              - cluster: userz
          - name: orders
            outlierDetection: {maxEjectionPercent: 101}
        """
        let errors = try #require(throws: ConfigErrors.self) { try MeshConfig.decode(yaml: yaml, file: "mesh.yaml") }
        #expect(errors.issues.map(\.description) == [
            "mesh.yaml:5:18: services[0].routes[0].cluster: unknown service 'userz'; did you mean 'users'?",
            "mesh.yaml:7:44: services[1].outlierDetection.maxEjectionPercent: expected an integer in 0...100, found 101",
        ])
    }

    /// A service's upstream TLS names files on the sidecars' machines: absolute paths, not looked for on the
    /// control plane's machine.
    @Test func aMeshServiceCarriesUpstreamTLSWithPathsOnTheSidecars() throws {
        let mesh = try MeshConfig.decode(yaml: """
        services:
          - name: users
            endpoints: [127.0.0.1:9001]
            tls: {caFile: /etc/mesh/ca.pem, certificate: /etc/mesh/cert.pem, privateKey: /etc/mesh/key.pem, subjectAltNames: [spiffe://mesh/sa/users]}
        """, file: "mesh.yaml")
        #expect(mesh.services[0].cluster.tls == UpstreamTLSConfig(caFile: "/etc/mesh/ca.pem", certificate: "/etc/mesh/cert.pem", privateKey: "/etc/mesh/key.pem",
                                                                   subjectAltNames: ["spiffe://mesh/sa/users"]))
        let errors = try #require(throws: ConfigErrors.self) {
            try MeshConfig.decode(yaml: "services:\n  - name: users\n    endpoints: []\n    tls: {caFile: ca.pem}\n", file: "mesh.yaml")
        }
        #expect(errors.issues.map(\.description) == [
            "mesh.yaml:4:19: services[0].tls.caFile: expected an absolute path (a mesh file's files are read on each sidecar's machine), found 'ca.pem'",
        ])
    }

    /// Tracing rides in Envoy's own field: HttpConnectionManager.tracing (random_sampling the share sampled at a root);
    /// no tracing block means forward, as Envoy would not trace either. The mesh file says it once for every sidecar.
    @Test func tracingTravelsInTheConnectionManagerAndTheMeshSetsItForEverySidecar() throws {
        for tracing in [TracingConfig(sampleRatio: 0.25), TracingConfig(mode: .forward), TracingConfig()] {
            var listener = ListenerConfig(name: "in", address: HostPort(host: "127.0.0.1", port: 15006), virtualHosts: [])
            listener.tracing = tracing
            let manager = try XDSEncoder.listener(listener).filterChains[0].filters[0].typedConfig
            let decoded = try Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(unpackingAny: manager)
            #expect(decoded.hasTracing == (tracing.mode == .participate))
            if tracing.mode == .participate { #expect(decoded.tracing.randomSampling.value == tracing.sampleRatio * 100) }
        }
        let mesh = try MeshConfig.decode(yaml: """
        tracing: {sampleRatio: 10%}
        services:
          - name: users
            endpoints: [127.0.0.1:9001]
        """, file: "mesh.yaml")
        #expect(mesh.tracing == TracingConfig(sampleRatio: 0.1))
        let web = SidecarIdentity(node: "web-1", service: "users", listeners: ["outbound": HostPort(host: "127.0.0.1", port: 15001),
                                                                               "inbound": HostPort(host: "127.0.0.1", port: 15006)],
                                  app: HostPort(host: "127.0.0.1", port: 8080))
        let resources = try MeshView.resources(mesh: mesh, registered: [:], for: web)
        var decoder = XDSDecoder()
        for (type, byName) in resources { decoder[type] = byName.mapValues(\.body) }
        let config = try decoder.config(base: SidecarConfig(listeners: [], clusters: []))
        #expect(config.listeners.map(\.tracing) == [TracingConfig(sampleRatio: 0.1), TracingConfig(sampleRatio: 0.1)])
        #expect(try MeshConfig.decode(yaml: "services: []", file: "m.yaml").tracing == TracingConfig(), "the default: participate, 1 %")
    }

    @Test func aSidecarsViewRoutesToEveryServiceAndItsAppInbound() throws {
        let mesh = try MeshConfig.decode(yaml: """
        services:
          - name: users
            endpoints: [127.0.0.1:9001]
          - name: web
            endpoints: []
        """, file: "mesh.yaml")
        let web = SidecarIdentity(node: "web-1", service: "web", listeners: ["outbound": HostPort(host: "127.0.0.1", port: 15001),
                                                                             "inbound": HostPort(host: "127.0.0.1", port: 15006)],
                                  app: HostPort(host: "127.0.0.1", port: 8080))
        let view = MeshView.config(mesh: mesh, registered: ["web": [HostPort(host: "127.0.0.1", port: 15006)]], for: web)
        #expect(view.listeners.map(\.name) == ["outbound", "inbound"])
        #expect(view.listeners[0].virtualHosts.map(\.domains) == [["users"], ["web"]])
        #expect(view.clusters.map(\.name) == ["users", "web", "inbound|web"])
        #expect(view.clusters[1].endpoints == [HostPort(host: "127.0.0.1", port: 15006)], "registered sidecars are endpoints of their service")
        #expect(view.clusters[2].endpoints == [HostPort(host: "127.0.0.1", port: 8080)])
        // Everything it is sent decodes as a valid sidecar config.
        let resources = try MeshView.resources(mesh: mesh, registered: [:], for: web)
        var decoder = XDSDecoder()
        for (type, byName) in resources { decoder[type] = byName.mapValues(\.body) }
        let config = try decoder.config(base: SidecarConfig(listeners: [], clusters: []))
        #expect(config.listeners.count == 2)
    }
}
