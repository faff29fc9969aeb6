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

    private init(plane: ControlPlane, echoes: [EchoServer], sidecar: Sidecar, client: ControlPlaneClient, tasks: [Task<Void, Never>]) {
        self.plane = plane
        self.echoes = echoes
        self.sidecar = sidecar
        self.client = client
        self.tasks = tasks
    }

    static func start(echoes count: Int, mesh: ([HostPort]) throws -> MeshConfig) async throws -> MeshHarness {
        var echoes: [EchoServer] = []
        for index in 0..<count { echoes.append(try await EchoServer.start(host: "127.0.0.1", port: 0, name: "echo-\(index)")) }
        let endpoints = echoes.map { HostPort(host: "127.0.0.1", port: $0.localAddress.port!) }
        let plane = ControlPlane(mesh: try mesh(endpoints), meshPath: nil, registrationGrace: .milliseconds(200), logger: Harness.quietLogger)
        let (ports, portSink) = AsyncStream<Int>.makeStream()
        let serving = Task { _ = try? await plane.serve(host: "127.0.0.1", port: 0) { portSink.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw SetupError(description: "the control plane did not start") }
        let base = SidecarConfig(admin: AdminConfig(address: HostPort(host: "127.0.0.1", port: 0)), concurrency: 1, drainTimeout: .seconds(2),
                                 listeners: [ListenerConfig(name: MeshView.outboundListener, address: HostPort(host: "127.0.0.1", port: 0),
                                                            direction: .outbound, virtualHosts: [])],
                                 clusters: [])
        let sidecar = try await Sidecar.start(config: base, logger: Harness.quietLogger)
        let listeners = sidecar.listenerAddresses.mapValues { HostPort(host: "127.0.0.1", port: $0.port!) }
        let client = ControlPlaneClient(addresses: [HostPort(host: "127.0.0.1", port: port)],
                                        identity: SidecarIdentity(node: "web-1", service: "web", listeners: listeners),
                                        sidecar: sidecar, base: base, logger: Harness.quietLogger)
        let following = Task { await client.run() }
        return MeshHarness(plane: plane, echoes: echoes, sidecar: sidecar, client: client, tasks: [serving, following])
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
    func eventually(_ what: String, timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws {
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
                mesh.plane.status().first?.status[.cluster]?.nack?.contains("maxEjectionPercent") == true
            }
            #expect(mesh.plane.status().first?.identity.node == "web-1")
            #expect(try await mesh.answer(host: "users") == "echo-1", "the last accepted config still serves")
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
