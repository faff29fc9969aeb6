import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import OutriggerConfig
import OutriggerCore
import OutriggerEcho
import OutriggerProxy
import Testing

@Suite("Health checks, drain, zones and panic, end to end")
struct HealthCheckingTests {
    static let fastChecks = HealthCheckConfig(kind: .http, interval: .milliseconds(300), unhealthyInterval: .milliseconds(200),
                                              timeout: .milliseconds(300), healthyThreshold: 2, unhealthyThreshold: 2, path: "/healthz")

    static func endpoint(_ harness: Harness, _ index: Int, cluster: String = "c") -> Endpoint {
        harness.sidecar.configStore.snapshot.clusters[cluster]!.endpoints[index]
    }

    /// Which echo server answered each of `count` requests.
    static func servers(_ harness: Harness, count: Int) async throws -> [String] {
        var servers: [String] = []
        for _ in 0..<count {
            let result = try await fetch(harness.url + "/")
            #expect(result.status == 200, "\(result.headers)")
            servers.append(result.echo?.server ?? "none")
        }
        return servers
    }

    @Test func httpChecksTakeAFailingEndpointOutAndBringItBack() async throws {
        try await withHarness(echoes: 3) { endpoints in
            var config = Harness.config(routes: [RouteConfig(destination: .cluster("c"))],
                                        clusters: [ClusterConfig(name: "c", endpoints: endpoints, healthCheck: Self.fastChecks)])
            config.clusters[0].loadBalancer.panicThreshold = 0
            return config
        } _: { (harness: Harness) async throws in
            let sick = Self.endpoint(harness, 0)
            try await waitUntil { (0..<3).allSatisfy { Self.endpoint(harness, $0).state.health == .healthy } }
            harness.echoes[0].setHealthy(false)
            try await waitUntil { sick.state.health == .unhealthy }
            #expect(sick.state.healthChecksFailed.current >= 2, "out only after unhealthyThreshold failures in a row")
            #expect(!(try await Self.servers(harness, count: 30)).contains("echo-0"), "an unhealthy endpoint gets no requests")

            let failed = sick.state.healthChecksFailed.current
            harness.echoes[0].setHealthy(true)
            try await waitUntil { sick.state.health == .healthy }
            #expect(sick.state.healthChecksPassed.current >= 2, "back only after healthyThreshold passes in a row")
            #expect(sick.state.healthChecksFailed.current >= failed)
            #expect((try await Self.servers(harness, count: 30)).contains("echo-0"), "healthy again, picked again")

            let clusters = try await fetch(harness.adminURL + "/clusters")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(clusters.body.utf8)) as? [String: Any])
            let endpoints = try #require(((object["clusters"] as? [[String: Any]])?.first?["endpoints"]) as? [[String: Any]])
            #expect(endpoints.count == 3)
            #expect(endpoints.allSatisfy { $0["health"] as? String == "healthy" && $0["draining"] as? Bool == false }, "\(endpoints)")
            let prometheus = try await fetch(harness.adminURL + "/stats/prometheus").body
            #expect(prometheus.contains("outrigger_endpoint_health_transitions_total{cluster=\"c\",to=\"unhealthy\"} 1"))
            #expect(prometheus.contains("outrigger_endpoint_health_transitions_total{cluster=\"c\",to=\"healthy\"} 1"))
        }
    }

    @Test func tcpChecksFollowWhetherThePortAcceptsConnections() async throws {
        let refusing = try RefusingPort()
        defer { refusing.close() }
        try await withHarness(echoes: 1) { endpoints in
            var check = Self.fastChecks
            check.kind = .tcp
            return Harness.config(routes: [RouteConfig(destination: .cluster("c"))],
                                  clusters: [ClusterConfig(name: "c", endpoints: endpoints + [HostPort(host: "127.0.0.1", port: refusing.port)],
                                                           loadBalancer: LoadBalancerConfig(panicThreshold: 0), healthCheck: check)])
        } _: { (harness: Harness) async throws in
            let closed = Self.endpoint(harness, 1)
            try await waitUntil { closed.state.health == .unhealthy && Self.endpoint(harness, 0).state.health == .healthy }
            #expect(try await Self.servers(harness, count: 10) == Array(repeating: "echo-0", count: 10), "no connect failures reach clients")
            refusing.startListening()
            try await waitUntil { closed.state.health == .healthy }
        }
    }

    @Test func grpcChecksSpeakGRPCHealthV1ToARealServer() async throws {
        let control = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-grpc-health-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: control) }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/grpc_health_server.py").path
        let server = try ChildProcess(try which("python3"), [script, control.path])
        defer { server.kill() }
        let port = try ProcessTests.port(in: try await server.waitForOutput(containing: "status SERVING"), after: "port ")
        try await withHarness(echoes: 1) { endpoints in
            var check = Self.fastChecks
            check.kind = .grpc
            check.service = "users.v1.Users"
            var wrongService = check
            wrongService.service = "no.such.Service"
            return Harness.config(routes: [RouteConfig(destination: .cluster("grpc"))], clusters: [
                ClusterConfig(name: "grpc", endpoints: [HostPort(host: "127.0.0.1", port: port)], upstreamProtocol: .http2, healthCheck: check),
                ClusterConfig(name: "unknown", endpoints: [HostPort(host: "127.0.0.1", port: port)], upstreamProtocol: .http2,
                              healthCheck: wrongService),
            ])
        } _: { (harness: Harness) async throws in
            let endpoint = Self.endpoint(harness, 0, cluster: "grpc")
            try await waitUntil { endpoint.state.health == .healthy }
            try await waitUntil { Self.endpoint(harness, 0, cluster: "unknown").state.health == .unhealthy }
            try "NOT_SERVING".write(to: control, atomically: true, encoding: .utf8)
            try await waitUntil { endpoint.state.health == .unhealthy }
            try "SERVING".write(to: control, atomically: true, encoding: .utf8)
            try await waitUntil { endpoint.state.health == .healthy }
        }
    }

    @Test func zoneFailoverThenPanic() async throws {
        try await withHarness(echoes: 4) { endpoints in
            var config = Harness.config(routes: [RouteConfig(destination: .cluster("c"))], clusters: [
                ClusterConfig(name: "c", endpoints: endpoints, endpointMetadata: [
                    endpoints[0]: EndpointMetadata(zone: "a"), endpoints[1]: EndpointMetadata(zone: "a"),
                    endpoints[2]: EndpointMetadata(zone: "b"), endpoints[3]: EndpointMetadata(zone: "b"),
                ], healthCheck: Self.fastChecks),
            ])
            config.zone = "a"
            return config
        } _: { (harness: Harness) async throws in
            let state = { (index: Int) in Self.endpoint(harness, index).state }
            try await waitUntil { (0..<4).allSatisfy { state($0).health == .healthy } }
            #expect(Set(try await Self.servers(harness, count: 20)) == ["echo-0", "echo-1"], "traffic stays in the sidecar's zone")

            harness.echoes[0].setHealthy(false)
            harness.echoes[1].setHealthy(false)
            try await waitUntil { state(0).health == .unhealthy && state(1).health == .unhealthy }
            #expect(Set(try await Self.servers(harness, count: 20)) == ["echo-2", "echo-3"], "the zone failed: over to zone b")

            harness.echoes[2].setHealthy(false)
            try await waitUntil { state(2).health == .unhealthy }
            // 1 of 4 healthy (25 %) is under the 50 % panic threshold: every endpoint is used again.
            #expect(Set(try await Self.servers(harness, count: 40)) == ["echo-0", "echo-1", "echo-2", "echo-3"])
            #expect(try await fetch(harness.adminURL + "/stats/prometheus").body.contains("outrigger_lb_panic_mode{cluster=\"c\"} 1"))

            for echo in harness.echoes { echo.setHealthy(true) }
            try await waitUntil { (0..<4).allSatisfy { state($0).health == .healthy } }
            #expect(Set(try await Self.servers(harness, count: 20)) == ["echo-0", "echo-1"], "zone a recovered: traffic comes home")
            #expect(try await fetch(harness.adminURL + "/stats/prometheus").body.contains("outrigger_lb_panic_mode{cluster=\"c\"} 0"))
        }
    }

    @Test func priorityFailoverFollowsHealth() async throws {
        try await withHarness(echoes: 3) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("c"))], clusters: [
                ClusterConfig(name: "c", endpoints: endpoints, endpointMetadata: [
                    endpoints[1]: EndpointMetadata(priority: 1), endpoints[2]: EndpointMetadata(priority: 1),
                ], loadBalancer: LoadBalancerConfig(panicThreshold: 0), healthCheck: Self.fastChecks),
            ])
        } _: { (harness: Harness) async throws in
            let state = { (index: Int) in Self.endpoint(harness, index).state }
            try await waitUntil { (0..<3).allSatisfy { state($0).health == .healthy } }
            #expect(Set(try await Self.servers(harness, count: 12)) == ["echo-0"], "priority 0 takes everything while healthy")
            harness.echoes[0].setHealthy(false)
            try await waitUntil { state(0).health == .unhealthy }
            #expect(Set(try await Self.servers(harness, count: 12)) == ["echo-1", "echo-2"], "spilled to priority 1")
            harness.echoes[0].setHealthy(true)
            try await waitUntil { state(0).health == .healthy }
            #expect(Set(try await Self.servers(harness, count: 12)) == ["echo-0"], "back to priority 0")
        }
    }

    @Test func anEndpointDrainsItselfUnderLoadWithoutLosingARequest() async throws {
        try await withHarness(echoes: 2) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("c"))], clusters: [ClusterConfig(name: "c", endpoints: endpoints)])
        } _: { (harness: Harness) async throws in
            let draining = Self.endpoint(harness, 0)
            async let load = run(try outriggerExecutable(), ["bench", harness.url + "/?size=16", "--rate", "400", "-c", "8",
                                                             "--duration", "2s", "--warmup", "0s", "--json", "/dev/stdout"])
            try await waitUntil { harness.echoes[0].requestsServed > 50 }
            harness.echoes[0].setDraining(true)
            try await waitUntil { draining.state.isDraining(now: NIODeadline.now().uptimeNanoseconds) }
            let servedWhenDrained = harness.echoes[0].requestsServed
            let result = try await load
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("\"failed\" : 0"), "no request lost: \(result.stdout.suffix(600))")
            // Requests already on their way when the drain began still finish there (at most one per connection).
            #expect(harness.echoes[0].requestsServed <= servedWhenDrained + 8, "\(harness.echoes.map(\.requestsServed))")
            #expect(harness.echoes[1].requestsServed > 200)
            #expect(try await fetch(harness.url + "/").headers["x-outrigger-drain"] == nil, "the drain signal is not passed to clients")
        }
    }

    @Test func adminPostDrainsAndUndrainsAnEndpoint() async throws {
        try await withHarness(echoes: 2) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("c"))], clusters: [ClusterConfig(name: "c", endpoints: endpoints)])
        } _: { (harness: Harness) async throws in
            let target = "127.0.0.1:\(harness.echoes[1].localAddress.port!)"
            let query = "?cluster=c&endpoint=\(target)"
            let drained = try await curl(["-s", "-X", "POST", harness.adminURL + "/endpoints/drain" + query])
            #expect(drained.stdout.hasPrefix("draining"), "\(drained.stdout)")
            #expect(Set(try await Self.servers(harness, count: 10)) == ["echo-0"])
            let clusters = try await fetch(harness.adminURL + "/clusters").body
            #expect(clusters.contains("\"draining\" : true"), "\(clusters)")
            #expect(try await fetch(harness.adminURL + "/endpoints/drain" + query).status == 405, "mutations take POST only")
            #expect(try await curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                                     harness.adminURL + "/endpoints/drain?cluster=c&endpoint=10.9.9.9:1"]).stdout == "404")
            _ = try await curl(["-s", "-X", "POST", harness.adminURL + "/endpoints/undrain" + query])
            #expect(Set(try await Self.servers(harness, count: 10)) == ["echo-0", "echo-1"])
        }
    }

    @Test func aCookieSetByTheProxyKeepsASessionOnOneEndpoint() async throws {
        try await withHarness(echoes: 3) { endpoints in
            var config = Harness.defaultConfig(endpoints)
            config.clusters[0].loadBalancer = LoadBalancerConfig(policy: .ringHash, hashPolicy: .cookie("session", ttl: .seconds(3600)))
            return config
        } _: { (harness: Harness) async throws in
            var firstServers: Set<String> = []
            for _ in 0..<12 {
                let first = try await fetch(harness.url + "/")
                let cookie = try #require(first.headers["set-cookie"])
                #expect(cookie.hasSuffix("; Max-Age=3600; Path=/; HttpOnly"), "\(cookie)")
                let pair = String(cookie.prefix { $0 != ";" })
                let server = try #require(first.echo?.server)
                firstServers.insert(server)
                for _ in 0..<3 {
                    let again = try await fetch(harness.url + "/", ["-b", pair])
                    #expect(again.echo?.server == server, "the session stays where its first request went")
                    #expect(again.headers["set-cookie"] == nil, "a client with the cookie gets no new one")
                }
            }
            #expect(firstServers.count > 1, "new sessions spread: \(firstServers)")
        }
    }

    @Test func dnsAnswersChangingUnderLoadDropNoRequest() async throws {
        // One name, two addresses on the same port (127.0.0.1 and 127.0.0.2 are both loopback).
        let first = try await EchoServer.start(host: "127.0.0.1", port: 0, name: "echo-0")
        let port = first.localAddress.port!
        let second = try await EchoServer.start(host: "127.0.0.2", port: port, name: "echo-1")
        let answers = NIOLockedValueBox<[String]>(["127.0.0.1"])
        let config = Harness.config(routes: [RouteConfig(destination: .cluster("c"))],
                                    clusters: [ClusterConfig(name: "c", endpoints: [HostPort(host: "users.mesh.test", port: port)])])
        let sidecar = try await Sidecar.start(config: config, logger: Harness.quietLogger) { endpoint in
            guard endpoint.host == "users.mesh.test" else { return try EndpointResolver.resolve(endpoint) }
            return try answers.withLockedValue { ips in try ips.map { try SocketAddress(ipAddress: $0, port: endpoint.port) } }
        }
        do {
            let url = "http://127.0.0.1:\(sidecar.listenerAddresses.values.first!.port!)/?size=16"
            async let load = run(try outriggerExecutable(), ["bench", url, "--rate", "400", "-c", "8", "--duration", "2s", "--warmup", "0s",
                                                             "--json", "/dev/stdout"])
            let steps = [["127.0.0.2"], ["127.0.0.1", "127.0.0.2"], ["127.0.0.1"], ["127.0.0.2", "127.0.0.1"]]
            for step in 0..<20 {
                answers.withLockedValue { $0 = steps[step % steps.count] }
                sidecar.refreshEndpoints()
                try await Task.sleep(for: .milliseconds(100))  // pacing the churn, not waiting for a result
            }
            let result = try await load
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("\"failed\" : 0"), "every request answered through the churn: \(result.stdout.suffix(600))")
            #expect(first.requestsServed > 50 && second.requestsServed > 50, "\([first.requestsServed, second.requestsServed])")
        } catch {
            Issue.record("\(error)")
        }
        await sidecar.shutdown()
        await first.stop()
        await second.stop()
    }

    @Test func aNameThatDoesNotResolveIsWarnedAboutAtItsPlaceInTheConfigFile() async throws {
        let file = try ConfigFile()
        try file.write("""
        listeners: [{name: in, address: 127.0.0.1:0, routes: [{cluster: c}]}]
        clusters:
          - name: c
            endpoints:
              - 127.0.0.1:1
              - users-b.mesh.test:8080
        """)
        let loaded = try SidecarConfig.loadWithEndpointSites(contentsOf: file.path)
        let log = CapturedLog()
        let sidecar = try await Sidecar.start(config: loaded.config, configPath: file.path, endpointSites: loaded.endpointSites,
                                              logger: log.logger) { endpoint in
            guard endpoint.host == "127.0.0.1" else { throw EndpointResolutionError(host: endpoint.host, message: "Name or service not known") }
            return [try SocketAddress(ipAddress: endpoint.host, port: endpoint.port)]
        }
        #expect(log.messages.contains { $0.hasPrefix("\(file.path):6:9: clusters[0].endpoints[1]: warning: 'users-b.mesh.test:8080' does not resolve") },
                "\(log.messages)")
        // A reload reads the file once more, and its warning keeps the place.
        try file.write("""
        listeners: [{name: in, address: 127.0.0.1:0, routes: [{cluster: c}]}]
        clusters:
          - name: c
            endpoints: [users-b.mesh.test:8080]
        """)
        #expect(await sidecar.reload())
        #expect(log.messages.contains { $0.hasPrefix("\(file.path):4:17: clusters[0].endpoints[0]: warning:") }, "\(log.messages)")
        await sidecar.shutdown()
    }

    @Test func aNameThatDoesNotResolveIsWaitedFor() async throws {
        let first = try await EchoServer.start(host: "127.0.0.1", port: 0, name: "echo-0")
        let port = first.localAddress.port!
        let second = try await EchoServer.start(host: "127.0.0.2", port: port, name: "echo-1")
        // users-a resolves from the start; users-b not yet; later users-a stops resolving.
        let answers = NIOLockedValueBox<[String: String]>(["users-a.mesh.test": "127.0.0.1"])
        let config = Harness.config(routes: [RouteConfig(destination: .cluster("c"))], clusters: [
            ClusterConfig(name: "c", endpoints: [HostPort(host: "users-a.mesh.test", port: port), HostPort(host: "users-b.mesh.test", port: port)]),
        ])
        let sidecar = try await Sidecar.start(config: config, logger: Harness.quietLogger) { endpoint in
            guard let ip = answers.withLockedValue({ $0[endpoint.host] }) else {
                throw EndpointResolutionError(host: endpoint.host, message: "Name or service not known")
            }
            return [try SocketAddress(ipAddress: ip, port: endpoint.port)]
        }
        do {
            let url = "http://127.0.0.1:\(sidecar.listenerAddresses.values.first!.port!)/"
            let servers = { () async throws -> Set<String> in
                var seen: Set<String> = []
                for _ in 0..<10 { seen.insert(try await fetch(url).echo?.server ?? "none") }
                return seen
            }
            #expect(sidecar.configStore.snapshot.unresolved.map { $0.endpoint.host } == ["users-b.mesh.test"], "reported")
            #expect(try await servers() == ["echo-0"], "started without the name that does not resolve")
            answers.withLockedValue { $0["users-b.mesh.test"] = "127.0.0.2" }
            sidecar.refreshEndpoints()
            #expect(try await servers() == ["echo-0", "echo-1"], "picked up once it resolves")
            answers.withLockedValue { $0["users-a.mesh.test"] = nil }
            sidecar.refreshEndpoints()
            #expect(try await servers() == ["echo-0", "echo-1"], "a name that stops resolving keeps its last addresses")
        } catch {
            Issue.record("\(error)")
        }
        await sidecar.shutdown()
        await first.stop()
        await second.stop()
    }
}

/// A logger that keeps every message, for tests that check what was said.
final class CapturedLog: Sendable {
    private let box = NIOLockedValueBox<[String]>([])

    var messages: [String] { box.withLockedValue { $0 } }

    var logger: Logger {
        let box = self.box
        return Logger(label: "captured") { _ in CapturingHandler(box: box) }
    }

    private struct CapturingHandler: LogHandler {
        let box: NIOLockedValueBox<[String]>
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            box.withLockedValue { $0.append(event.message.description) }
        }
    }
}
