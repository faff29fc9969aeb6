import Foundation
import Logging
import OutriggerConfig
import OutriggerControl
import OutriggerEcho
import OutriggerProxy
import Testing

/// A control plane, echo services and a sidecar following it, all in this process over loopback.
final class MeshHarness: Sendable {
    let plane: ControlPlane
    let echoes: [EchoServer]
    let sidecar: Sidecar
    let client: ControlPlaneClient
    let tasks: [Task<Void, Never>]
    let xdsPort: Int

    private init(plane: ControlPlane, echoes: [EchoServer], sidecar: Sidecar, client: ControlPlaneClient, tasks: [Task<Void, Never>], xdsPort: Int) {
        self.xdsPort = xdsPort
        self.plane = plane
        self.echoes = echoes
        self.sidecar = sidecar
        self.client = client
        self.tasks = tasks
    }

    static func start(echoes count: Int, tls: TLSConfig? = nil, trust: String? = nil, mesh: ([HostPort]) throws -> MeshConfig) async throws -> MeshHarness {
        var echoes: [EchoServer] = []
        for index in 0..<count { echoes.append(try await EchoServer.start(host: "127.0.0.1", port: 0, name: "echo-\(index)")) }
        let endpoints = echoes.map { HostPort(host: "127.0.0.1", port: $0.localAddress.port!) }
        let (plane, port, serving) = try await XDSPeerTests.startPlane(try mesh(endpoints), tls: tls)
        let base = SidecarConfig(admin: AdminConfig(address: HostPort(host: "127.0.0.1", port: 0)), concurrency: 1, drainTimeout: .seconds(2),
                                 listeners: [ListenerConfig(name: MeshView.outboundListener, address: HostPort(host: "127.0.0.1", port: 0),
                                                            direction: .outbound, virtualHosts: [])],
                                 clusters: [])
        let sidecar = try await Sidecar.start(config: base, logger: Harness.quietLogger)
        let listeners = sidecar.listenerAddresses.mapValues { HostPort(host: "127.0.0.1", port: $0.port!) }
        let client = ControlPlaneClient(addresses: [HostPort(host: "127.0.0.1", port: port)],
                                        identity: SidecarIdentity(node: "web-1", service: "web", listeners: listeners),
                                        sidecar: sidecar, base: base, trustedCertificates: trust, logger: Harness.quietLogger)
        let following = Task { await client.run() }
        return MeshHarness(plane: plane, echoes: echoes, sidecar: sidecar, client: client, tasks: [serving, following], xdsPort: port)
    }

    var outboundURL: String { "http://127.0.0.1:\(sidecar.listenerAddresses[MeshView.outboundListener]!.port!)" }

    /// The echo that answered a request for `host` through the outbound listener, or the status line when none did.
    func answer(host: String, path: String = "/") async throws -> String {
        let result = try await curl(["-o", "/dev/null", "-D", "-", "-H", "Host: \(host)", outboundURL + path])
        let lines = result.stdout.split(separator: "\r\n")
        if let server = lines.first(where: { $0.lowercased().hasPrefix("x-echo-server:") }) {
            return server.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces)
        }
        return lines.first.map(String.init) ?? result.stderr
    }

    /// Polls until `condition` holds (pushes are asynchronous), or fails after `timeout`.
    func eventually(_ what: String, timeout: Duration = .seconds(60), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw SetupError(description: "timed out waiting until \(what)")
    }

    func stop() async {
        for task in tasks { task.cancel() }
        await sidecar.shutdown()
        for echo in echoes { await echo.stop() }
    }
}

@Suite("The mesh store seam")
struct MeshStoreTests {
    /// The file store versions by content: a rewrite with the same bytes is no change, an edit is a new version
    /// (one made before the follower waits is not missed), a broken edit is refused and the running mesh kept.
    @Test func theFileStoreVersionsByContentAndTheControlPlaneFollowsIt() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("mesh.yaml").path
        let first = "services:\n  - name: users\n    endpoints: [127.0.0.1:9001]\n"
        try first.write(toFile: file, atomically: true, encoding: .utf8)
        let store = MeshFileStore(path: file, pollInterval: .milliseconds(10))
        let snapshot = try store.snapshot()
        let plane = ControlPlane(mesh: snapshot.mesh, version: snapshot.version, store: store, logger: Harness.quietLogger)

        try first.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try store.snapshot().version == snapshot.version, "the same bytes, the same version")
        #expect(await plane.reload() && plane.metrics.meshRejected.current == 0)

        // Edited before anyone waits: the wait returns at once.
        try "services:\n  - name: users\n    endpoints: [127.0.0.1:9002]\n".write(toFile: file, atomically: true, encoding: .utf8)
        try await store.waitForChange(after: snapshot.version)
        let following = Task { await plane.follow() }
        defer { following.cancel() }
        try await waitUntil { plane.mesh.services.first?.cluster.endpoints == [HostPort(host: "127.0.0.1", port: 9002)] }
        #expect(try store.snapshot().version != snapshot.version)

        try "services:\n  - name: users\n    endpoints: [127.0.0.1:9003]\n    bogus: 1\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try store.snapshot() }
        try await waitUntil { plane.metrics.meshRejected.current >= 1 }
        #expect(plane.mesh.services.first?.cluster.endpoints == [HostPort(host: "127.0.0.1", port: 9002)], "the running mesh is kept")
        // Tried once for that edit, not again and again while it stayed: the next good edit finds one rejection.
        try "services:\n  - name: users\n    endpoints: [127.0.0.1:9004]\n".write(toFile: file, atomically: true, encoding: .utf8)
        try await waitUntil { plane.mesh.services.first?.cluster.endpoints == [HostPort(host: "127.0.0.1", port: 9004)] }
        #expect(plane.metrics.meshRejected.current == 1)
    }
}

@Suite("Control plane: a sidecar follows outrigger control over ADS, end to end")
struct ControlPlaneTests {
    static func mesh(_ endpoints: [HostPort], usersTo: String = "users-v1") -> MeshConfig {
        MeshConfig(services: [
            MeshConfig.Service(cluster: ClusterConfig(name: "users", endpoints: []),
                               routes: [RouteConfig(destination: .cluster(usersTo))]),
            MeshConfig.Service(cluster: ClusterConfig(name: "users-v1", endpoints: [endpoints[0]])),
            MeshConfig.Service(cluster: ClusterConfig(name: "users-v2", endpoints: [endpoints[1]])),
        ])
    }

    /// An admin listener that takes the connection and never answers (a stopped process still holds its port) is an
    /// error for `outrigger control status` and the rollout gate, not a wait without end.
    @Test func anAdminThatNeverAnswersIsAnErrorNotAWait() async throws {
        let silent = try await RecordingUpstream.start()
        defer { Task { await silent.stop() } }
        await #expect(throws: AdminFetchTimeout.self) {
            _ = try await ControlPlane.fetch(host: "127.0.0.1", port: silent.port, path: "/status", timeout: .milliseconds(300))
        }
        #expect(silent.receivedText.hasPrefix("GET /status HTTP/1.1\r\n"))
    }

    @Test func pushesAreAppliedAndABadOneIsRefusedWithTheOldConfigServing() async throws {
        let mesh = try await MeshHarness.start(echoes: 2) { Self.mesh($0) }
        do {
            try await mesh.eventually("the first push routes users to v1") { try await mesh.answer(host: "users") == "echo-0" }
            #expect(try await mesh.answer(host: "users-v2") == "echo-1")
            #expect(try await mesh.answer(host: "nobody").contains("404"), "no route for an unknown service")

            // A route change: users now goes to v2.
            let endpoints = mesh.echoes.map { HostPort(host: "127.0.0.1", port: $0.localAddress.port!) }
            mesh.plane.apply(Self.mesh(endpoints, usersTo: "users-v2"))
            try await mesh.eventually("the route change arrives") { try await mesh.answer(host: "users") == "echo-1" }

            // A change the sidecar's validation refuses: it NACKs and keeps serving the last good config.
            var bad = Self.mesh(endpoints, usersTo: "users-v2")
            bad.services[1].cluster.outlierDetection = OutlierDetectionConfig()
            bad.services[1].cluster.outlierDetection?.maxEjectionPercent = 150
            mesh.plane.apply(bad)
            try await mesh.eventually("the sidecar NACKs") { mesh.client.status.rejected > 0 }
            let refusal = try #require(mesh.client.status.lastRejection)
            #expect(refusal == "Cluster 'users-v1': outlierDetection.maxEjectionPercent: expected an integer in 0...100, found 150", "\(refusal)")
            try await mesh.eventually("the control plane records the NACK") {
                mesh.plane.status().first?.types[.cluster]?.nack?.contains("maxEjectionPercent") == true
            }
            #expect(mesh.plane.status().first?.identity.node == "web-1")
            #expect(try await mesh.answer(host: "users") == "echo-1", "the last accepted config still serves")

            // The sidecar's admin says where its config came from and what it refused.
            let admin = "http://127.0.0.1:\(mesh.sidecar.adminAddress!.port!)"
            let dump = try await curl([admin + "/config_dump"]).stdout
            let object = try #require(try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? [String: Any])
            let control = try #require(object["controlPlane"] as? [String: Any])
            #expect((control["lastNack"] as? String)?.contains("maxEjectionPercent") == true, "\(control)")
            #expect(((control["types"] as? [String: Any])?["Cluster"] as? [String: Any])?["resources"] as? [String] == ["users", "users-v1", "users-v2"])
            let stats = try await curl([admin + "/stats/prometheus"]).stdout
            #expect(stats.contains("outrigger_control_updates_total{result=\"rejected\"} 1\n"), "\(stats.suffix(800))")
            #expect(stats.contains("outrigger_control_connected 1\n"))
        } catch {
            await mesh.stop()
            throw error
        }
        await mesh.stop()
    }

    @Test func xdsOverTLSIsVerifiedAgainstTheGivenCA() async throws {
        let certificate = try await makeTestCertificate()
        let mesh = try await MeshHarness.start(echoes: 2, tls: certificate, trust: certificate.certificate) { Self.mesh($0) }
        do {
            try await mesh.eventually("the first push arrives over TLS") { try await mesh.answer(host: "users") == "echo-0" }
        } catch {
            await mesh.stop()
            throw error
        }
        await mesh.stop()
        // A sidecar that does not trust the certificate never takes a push from it.
        let other = try await makeTestCertificate()
        let untrusting = try await MeshHarness.start(echoes: 2, tls: certificate, trust: other.certificate) { Self.mesh($0) }
        try await untrusting.eventually("its handshakes fail twice") { untrusting.client.status.streamFailures >= 2 }
        #expect(untrusting.client.status.accepted == 0 && !untrusting.client.status.connected)
        #expect(try await untrusting.answer(host: "users").contains("404"), "it keeps its start-up config (no routes)")
        await untrusting.stop()
    }

    @Test func badInputOnTheStreamHurtsOnlyThatStream() async throws {
        let mesh = try await MeshHarness.start(echoes: 2) { Self.mesh($0) }
        do {
            try await mesh.eventually("the first push arrives") { try await mesh.answer(host: "users") == "echo-0" }
            let script = XDSPeerTests.peer
            func abuse(_ kind: String) async throws -> [String: Any] {
                let result = try await run("python3", [script, "abuse", "127.0.0.1:\(mesh.xdsPort)", kind])
                return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)\(result.stderr)")
            }
            let garbage = try await abuse("garbage")
            #expect(garbage["code"] as? String == "INVALID_ARGUMENT" && garbage["responses"] as? Int == 0, "bytes that are no DiscoveryRequest end that stream: \(garbage)")
            let oversized = try await abuse("oversized")
            // The server refuses it (RESOURCE_EXHAUSTED), or ends the stream while the client is still sending.
            #expect(["RESOURCE_EXHAUSTED", "CANCELLED"].contains(oversized["code"] as? String) && oversized["responses"] as? Int == 0,
                    "a message over 4 MiB is refused: \(oversized)")
            let silent = try await abuse("silent")
            #expect(silent["responses"] as? Int == 1, "a client that never ACKs still got its clusters: \(silent)")

            // The well-behaved sidecar is untouched and still follows pushes.
            let endpoints = mesh.echoes.map { HostPort(host: "127.0.0.1", port: $0.localAddress.port!) }
            mesh.plane.apply(Self.mesh(endpoints, usersTo: "users-v2"))
            try await mesh.eventually("the next push still arrives") { try await mesh.answer(host: "users") == "echo-1" }
        } catch {
            await mesh.stop()
            throw error
        }
        await mesh.stop()
    }

    /// A big mesh is served whole: 5,000 services are 10,000 resources (5,000 clusters and 5,000 endpoint
    /// assignments) plus a route configuration with 5,000 virtual hosts, each response well under gRPC's 4 MiB.
    /// The sidecar applies them and routes to the last service as to the first.
    @Test func tenThousandResourcesReachTheSidecar() async throws {
        let started = ContinuousClock.now
        let mesh = try await MeshHarness.start(echoes: 2) { endpoints in
            MeshConfig(services: (0..<5_000).map { index in
                MeshConfig.Service(cluster: ClusterConfig(name: "svc-\(index)", endpoints: [endpoints[index % 2]], connectTimeout: .seconds(10)))
            })
        }
        do {
            try await mesh.eventually("the last service is routed", timeout: .seconds(120)) { try await mesh.answer(host: "svc-4999") == "echo-1" }
            print("5,000 services (10,002 resources): first push applied \(ContinuousClock.now - started) after the control plane started")
            #expect(try await mesh.answer(host: "svc-0") == "echo-0")
            #expect(mesh.sidecar.configStore.snapshot.clusters.count == 5_000)
        } catch {
            await mesh.stop()
            throw error
        }
        await mesh.stop()
    }

    /// A fleet reconnecting at once is not left to the kernel's SYN retransmissions: the ADS port listens with a
    /// backlog of 4,096 (NIO's default is 128). `ss` shows a listening socket's backlog as its Send-Q.
    @Test func theADSPortTakesAFleetReconnectingAtOnce() async throws {
        let (_, port, serving) = try await XDSPeerTests.startPlane(Self.mesh([HostPort(host: "127.0.0.1", port: 1), HostPort(host: "127.0.0.1", port: 2)]))
        defer { serving.cancel() }
        let listing = try await run("ss", ["-Hltn", "sport = :\(port)"])
        let columns = listing.stdout.split(separator: " ", omittingEmptySubsequences: true)
        #expect(columns.count >= 3 && columns[2] == "4096", "State Recv-Q Send-Q …: \(listing.stdout)\(listing.stderr)")
    }

    @Test func aNodeIdUsedTwiceIsServedTwiceAndTheNewestRegisters() async throws {
        let mesh = try await MeshHarness.start(echoes: 2) { Self.mesh($0) }
        do {
            try await mesh.eventually("the first push arrives") { try await mesh.answer(host: "users") == "echo-0" }
            let twin = ControlPlaneClient(addresses: [HostPort(host: "127.0.0.1", port: mesh.xdsPort)],
                                          identity: SidecarIdentity(node: "web-1", service: "web", listeners: [
                                              MeshView.outboundListener: HostPort(host: "127.0.0.1", port: mesh.sidecar.listenerAddresses[MeshView.outboundListener]!.port!),
                                          ]),
                                          sidecar: mesh.sidecar, base: SidecarConfig(admin: AdminConfig(address: HostPort(host: "127.0.0.1", port: 0)), concurrency: 1, drainTimeout: .seconds(2), listeners: [], clusters: []), logger: Harness.quietLogger)
            let following = Task { await twin.run() }
            defer { following.cancel() }
            try await mesh.eventually("both streams of web-1 are served") { mesh.plane.status().filter { $0.identity.node == "web-1" }.count == 2 }
            #expect(try await mesh.answer(host: "users") == "echo-0", "the first is unaffected")
        } catch {
            await mesh.stop()
            throw error
        }
        await mesh.stop()
    }

    @Test func aLostControlPlaneChangesNothing() async throws {
        let mesh = try await MeshHarness.start(echoes: 2) { Self.mesh($0) }
        do {
            try await mesh.eventually("the first push arrives") { try await mesh.answer(host: "users") == "echo-0" }
            mesh.tasks[0].cancel()  // the control plane's server stops
            try await mesh.eventually("the sidecar notices") { !mesh.client.status.connected }
            for _ in 0..<5 { #expect(try await mesh.answer(host: "users") == "echo-0") }
        } catch {
            await mesh.stop()
            throw error
        }
        await mesh.stop()
    }
}

@Suite("Our xDS protos against Envoy's own (PyPI xds-protos)")
struct XDSWireCompatibilityTests {
    @Test func everyDeclaredFieldHasEnvoysNumberTypeAndName() async throws {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let protos = here.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Protos").path
        let result = try await run("python3", [here.appendingPathComponent("Scripts/xds_wire_compat.py").path, protos])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("0 differ from Envoy's"), "\(result.stdout)")
    }
}

@Suite("Peers nobody here wrote: grpcio's xDS client follows outrigger control; Envoy's types drive our sidecar")
struct XDSPeerTests {
    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts")
    static let peer = scripts.appendingPathComponent("xds_grpc_peer.py").path
    static let reference = scripts.appendingPathComponent("xds_reference_server.py").path

    /// A control plane serving `mesh` on a port of its own, in this process.
    static func startPlane(_ mesh: MeshConfig, tls: TLSConfig? = nil) async throws -> (ControlPlane, Int, Task<Void, Never>) {
        let plane = ControlPlane(mesh: mesh, registrationGrace: .milliseconds(200), logger: Harness.quietLogger)
        let (ports, portSink) = AsyncStream<Int>.makeStream()
        let serving = Task {
            _ = try? await plane.serve(host: "127.0.0.1", port: 0, tls: tls) { portSink.yield($0) }
            portSink.finish()  // a serve that failed before it listened ends the wait below
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw SetupError(description: "the control plane did not start") }
        return (plane, port, serving)
    }

    @Test func grpcioResolvesAServiceThroughOurControlPlaneAndFollowsAPushedChange() async throws {
        let alpha = try ChildProcess(try which("python3"), [Self.peer, "server", "alpha"])
        defer { alpha.kill() }
        let beta = try ChildProcess(try which("python3"), [Self.peer, "server", "beta"])
        defer { beta.kill() }
        let alphaPort = try ProcessTests.port(in: try await alpha.waitForOutput(containing: "port "), after: "port ")
        let betaPort = try ProcessTests.port(in: try await beta.waitForOutput(containing: "port "), after: "port ")
        func mesh(_ ports: [Int]) -> MeshConfig {
            MeshConfig(services: [MeshConfig.Service(cluster: ClusterConfig(name: "echo", endpoints: ports.map { HostPort(host: "127.0.0.1", port: $0) },
                                                                            upstreamProtocol: .http2))])
        }
        let (plane, port, serving) = try await Self.startPlane(mesh([alphaPort, betaPort]))
        defer { serving.cancel() }

        let spread = try await run("python3", [Self.peer, "call", "127.0.0.1:\(port)", "echo", "20"])
        let answers = try #require(try JSONSerialization.jsonObject(with: Data(spread.stdout.utf8)) as? [String: Any])["answers"] as? [String: Int]
        #expect(answers?["alpha"] ?? 0 >= 5 && answers?["beta"] ?? 0 >= 5, "round robin over our endpoints: \(spread.stdout) \(spread.stderr)")
        #expect(plane.metrics.nacks.current == 0 && plane.metrics.acks.current >= 4, "grpcio ACKed every type: \(plane.metrics.prometheusText())")

        // A pushed change (alpha removed) moves a running client's traffic.
        let watch = try ChildProcess(try which("python3"), [Self.peer, "watch", "127.0.0.1:\(port)", "echo", "8"])
        defer { watch.kill() }
        try await watch.waitForOutput(containing: "\"t\": 1")
        plane.apply(mesh([betaPort]))
        let text = try await watch.waitForOutput(containing: "\"t\": 7")
        let last = try #require(text.split(separator: "\n").last { $0.contains("\"t\": 7") })
        let lastAnswers = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])["answers"] as? [String: Int]
        #expect(lastAnswers?.keys.sorted() == ["beta"], "after the push only beta answers: \(text)")
    }

    @Test func envoysOwnMessagesConfigureOurSidecarAndANackReachesTheServer() async throws {
        let echo = try await EchoServer.start(host: "127.0.0.1", port: 0, name: "backend-0")
        let base = SidecarConfig(admin: nil, concurrency: 1, drainTimeout: .seconds(2),
                                 listeners: [ListenerConfig(name: "outbound", address: HostPort(host: "127.0.0.1", port: 0), direction: .outbound, virtualHosts: [])],
                                 clusters: [])
        let sidecar = try await Sidecar.start(config: base, logger: Harness.quietLogger)
        let listenerPort = sidecar.listenerAddresses["outbound"]!.port!
        let spec = try ConfigFile()
        func write(extraField: Bool) throws {
            let object: [String: Any] = [
                "listeners": [["name": "outbound", "address": "127.0.0.1:\(listenerPort)", "direction": "OUTBOUND",
                               "virtual_hosts": [["name": "all", "domains": ["*"], "routes": [["prefix": "/", "cluster": "backend"]]]]]],
                "clusters": [["name": "backend", "endpoints": ["127.0.0.1:\(echo.localAddress.port!)"], "extra_field": extraField]],
            ]
            try spec.write(String(data: try JSONSerialization.data(withJSONObject: object), encoding: .utf8)!)
        }
        try write(extraField: false)
        let server = try ChildProcess(try which("python3"), [Self.reference, "serve", spec.path])
        let serverPort = try ProcessTests.port(in: try await server.waitForOutput(containing: "port "), after: "port ")
        let client = ControlPlaneClient(addresses: [HostPort(host: "127.0.0.1", port: serverPort)],
                                        identity: SidecarIdentity(node: "sidecar-1", service: "web", listeners: ["outbound": HostPort(host: "127.0.0.1", port: listenerPort)]),
                                        sidecar: sidecar, base: base, logger: Harness.quietLogger)
        let following = Task { await client.run() }
        do {
            // Generous: a suite that loads both cores (the 10,000-resource push) slows the Python server too.
            let deadline = ContinuousClock.now + .seconds(60)
            var answer = ""
            while ContinuousClock.now < deadline {
                answer = try await curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(listenerPort)/"]).stdout
                if answer == "200" { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(answer == "200", "the reference server's Listener, RouteConfiguration, Cluster and ClusterLoadAssignment route to the echo")
            try await server.waitForOutput(containing: "\"type\": \"ClusterLoadAssignment\", \"version\": \"1\"")

            try write(extraField: true)
            let log = try await server.waitForOutput(containing: "not implemented by Outrigger")
            let nack = try #require(log.split(separator: "\n").first { $0.contains("not implemented by Outrigger") })
            #expect(nack.contains("Cluster 'backend': field 39 of envoy.config.cluster.v3.Cluster is not implemented by Outrigger"), "\(nack)")
            #expect(nack.contains("\"version\": \"1\""), "a NACK carries the last accepted version: \(nack)")
            #expect(try await curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(listenerPort)/"]).stdout == "200")
        } catch {
            following.cancel()
            server.kill()
            await sidecar.shutdown()
            await echo.stop()
            throw error
        }
        following.cancel()
        server.kill()
        await sidecar.shutdown()
        await echo.stop()
    }
}

/// A rollout's two phases on one control plane, to a sidecar following it over ADS: a generation prepared is held
/// and not served, committed it is served at once; one the sidecar cannot prepare is refused with why, and dropped.
@Suite("Staged generations: prepare, commit, abort")
struct StagedGenerationTests {
    @Test func aPreparedGenerationServesNothingUntilCommittedAndARefusedOneIsDropped() async throws {
        let mesh = try await MeshHarness.start(echoes: 2) { endpoints in
            MeshConfig(services: [MeshConfig.Service(cluster: ClusterConfig(name: "users", endpoints: [endpoints[0]]))])
        }
        do {
            try await mesh.eventually("the sidecar serves users from echo-0") { try await mesh.answer(host: "users") == "echo-0" }
            let second = HostPort(host: "127.0.0.1", port: mesh.echoes[1].localAddress.port!)
            let next = MeshConfig(services: [MeshConfig.Service(cluster: ClusterConfig(name: "users", endpoints: [second]))])

            let prepared = await mesh.plane.prepare(generation: 2, mesh: next, timeout: .seconds(30))
            #expect(prepared.count == 1 && prepared["web-1"].map { $0.refusal == nil } == true, "\(prepared)")
            for _ in 0..<3 { #expect(try await mesh.answer(host: "users") == "echo-0", "prepared, not served") }
            let committed = await mesh.plane.activate(generation: 2, mesh: next, version: "v2", nodes: ["web-1"], timeout: .seconds(30))
            #expect(committed.count == 1 && committed["web-1"] == .some(nil), "\(committed)")
            #expect(try await mesh.answer(host: "users") == "echo-1", "served once the commit is ACKed")
            #expect(mesh.plane.status().first?.generation == 2 && mesh.plane.status().first?.mesh == "v2")

            // A generation the sidecar cannot prepare: its upstream CA file is not on the sidecar's machine.
            var broken = next
            broken.services[0].cluster.tls = UpstreamTLSConfig(caFile: "/nonexistent/ca.pem")
            let refused = await mesh.plane.prepare(generation: 3, mesh: broken, timeout: .seconds(30))
            let refusal = refused["web-1"]?.refusal
            #expect(refusal?.contains("/nonexistent/ca.pem") == true, "\(refused)")
            await mesh.plane.drop(generation: 3, timeout: .seconds(30))
            #expect(try await mesh.answer(host: "users") == "echo-1")

            // A commit of a generation never prepared there is refused.
            let unprepared = await mesh.plane.activate(generation: 4, mesh: next, version: "v2", nodes: ["web-1"], timeout: .seconds(30))
            #expect((unprepared["web-1"] ?? nil)?.contains("generation 4 was not prepared here") == true, "\(unprepared)")
            #expect(try await mesh.answer(host: "users") == "echo-1")

            // Rolled back: the sidecars it activated are served the mesh before it again, as a plain push.
            mesh.plane.endRollout(generation: 4)
            try await mesh.eventually("the sidecar serves users from echo-0 again") { try await mesh.answer(host: "users") == "echo-0" }
            #expect(mesh.plane.status().first?.generation == nil)
        } catch {
            await mesh.stop()
            throw error
        }
        await mesh.stop()
    }
}
