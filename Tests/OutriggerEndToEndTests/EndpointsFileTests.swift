import Foundation
import OutriggerConfig
import Testing

@Suite("Endpoints files, end to end")
struct EndpointsFileEndToEndTests {
    /// A sidecar whose only cluster takes its endpoints from a file, in front of two echo servers.
    static func withFileHarness(_ body: (Harness, _ write: (String) throws -> Void) async throws -> Void) async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-endpoints-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        let write = { (text: String) in try text.write(to: file, atomically: true, encoding: .utf8) }
        try await withHarness(echoes: 2) { endpoints in
            try write("\(endpoints[0])\n")
            return Harness.config(routes: [RouteConfig(destination: .cluster("discovered"))],
                                  clusters: [ClusterConfig(name: "discovered", endpoints: [], endpointsFile: file.path)])
        } _: { (harness: Harness) async throws in
            try await body(harness, write)
        }
    }

    @Test func aChangedFileMovesTrafficAndABadOneIsIgnored() async throws {
        try await Self.withFileHarness { harness, write in
            let (a, b) = ("127.0.0.1:\(harness.echoes[0].localAddress.port!)", "127.0.0.1:\(harness.echoes[1].localAddress.port!)")
            #expect(try await fetch(harness.url + "/").echo?.server == "echo-0", "the file's endpoint serves from the start")

            try write("# moved\n\(b)\n")
            harness.sidecar.refreshEndpointsFiles()
            #expect(try await fetch(harness.url + "/").echo?.server == "echo-1")

            try write("\(a)\nnot an endpoint\n")
            harness.sidecar.refreshEndpointsFiles()
            #expect(try await fetch(harness.url + "/").echo?.server == "echo-1", "a broken file keeps the last good endpoints")

            try write("")
            harness.sidecar.refreshEndpointsFiles()
            let empty = try await fetch(harness.url + "/")
            #expect(empty.status == 503)
            #expect(empty.headers["x-outrigger-reason"] == "no_healthy_upstream")
        }
    }

    @Test func aRemovedEndpointsIdleConnectionsClose() async throws {
        try await Self.withFileHarness { harness, write in
            let b = "127.0.0.1:\(harness.echoes[1].localAddress.port!)"
            let connections = harness.sidecar.configStore.stats.cluster("discovered").connectionsActive
            #expect(try await fetch(harness.url + "/").echo?.server == "echo-0")
            #expect(connections.current == 1, "the connection to echo-0 stays pooled")
            try write("\(b)\n")
            harness.sidecar.refreshEndpointsFiles()
            // Long before the pool's 60 s idle timeout: the endpoint left, so its idle connection goes now.
            try await waitUntil { connections.current == 0 }
            #expect(try await fetch(harness.url + "/").echo?.server == "echo-1")
            #expect(connections.current == 1)
        }
    }

    @Test func aRemovedEndpointsBusyConnectionClosesWhenItsRequestEndsAndGivesItsSlotBack() async throws {
        try await Self.withFileHarness { harness, write in
            let b = "127.0.0.1:\(harness.echoes[1].localAddress.port!)"
            let stats = harness.sidecar.configStore.stats.cluster("discovered")
            // 3 s: the request is surely still in flight when the endpoint leaves, however busy the machine.
            let inFlight = Task { try await fetch(harness.url + "/?delay=3000") }
            try await waitUntil(timeout: .seconds(21)) { stats.connectionsActive.current == 1 && stats.requestsActive.current == 1 }
            try write("\(b)\n")
            harness.sidecar.refreshEndpointsFiles()
            #expect(try await inFlight.value.echo?.server == "echo-0", "a request in flight finishes on the endpoint that left")
            try await waitUntil(timeout: .seconds(22)) { stats.connectionsActive.current == 0 && stats.connectionSlots.current == 0 }
            #expect(try await fetch(harness.url + "/").echo?.server == "echo-1")
        }
    }

    @Test func aNewEndpointStartsSlowUnderSlowStart() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-endpoints-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        try await withHarness(echoes: 3) { endpoints in
            try "\(endpoints[0])\n\(endpoints[1])\n".write(to: file, atomically: true, encoding: .utf8)
            return Harness.config(routes: [RouteConfig(destination: .cluster("c"))], clusters: [
                ClusterConfig(name: "c", endpoints: [], endpointsFile: file.path,
                              loadBalancer: LoadBalancerConfig(slowStart: .init(window: .seconds(10), aggression: 1, minWeightPercent: 10))),
            ])
        } _: { (harness: Harness) async throws in
            // Endpoints present at start are all new alike (as in Envoy): let their window pass first.
            try await Task.sleep(for: .milliseconds(10_100))
            let newcomer = harness.echoes[2]
            try "127.0.0.1:\(harness.echoes[0].localAddress.port!)\n127.0.0.1:\(harness.echoes[1].localAddress.port!)\n127.0.0.1:\(newcomer.localAddress.port!)\n"
                .write(to: file, atomically: true, encoding: .utf8)
            harness.sidecar.refreshEndpointsFiles()
            // One client process for all 105 (not one curl each): they take well under the window even on a busy machine.
            let load = try await run("h2load", ["--h1", "-n", "105", "-c", "1", harness.url + "/"])
            #expect(load.stdout.contains("105 succeeded"), "\(load.stdout)")
            // Weights 100, 100 and, for the newcomer, max(10 %, age / 10 s): a handful of 105, where round robin alone
            // would give it 35.
            print("slow start: the newcomer got \(newcomer.requestsServed) of 105")
            #expect((1...20).contains(newcomer.requestsServed), "the newcomer got \(newcomer.requestsServed) of 105")
        }
    }

    @Test func churnUnderLoadDropsNoRequest() async throws {
        try await Self.withFileHarness { harness, write in
            let (a, b) = ("127.0.0.1:\(harness.echoes[0].localAddress.port!)", "127.0.0.1:\(harness.echoes[1].localAddress.port!)")
            async let load = run(try outriggerExecutable(), ["bench", harness.url + "/?size=16", "--rate", "400", "-c", "8",
                                                             "--duration", "2s", "--warmup", "0s", "--json", "/dev/stdout"])
            // Add and remove endpoints every 100 ms while the load runs: only b, both, only a, both, …
            let sets = ["\(b)\n", "\(a)\n\(b) weight=2\n", "\(a)\n", "\(b)\n\(a)\n"]
            for step in 0..<20 {
                try write(sets[step % sets.count])
                harness.sidecar.refreshEndpointsFiles()
                try await Task.sleep(for: .milliseconds(100))  // pacing the churn, not waiting for a result
            }
            let result = try await load
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("\"failed\" : 0"), "every request answered through the churn: \(result.stdout.suffix(600))")
            #expect(harness.echoes.allSatisfy { $0.requestsServed > 50 }, "both endpoints served: \(harness.echoes.map(\.requestsServed))")
        }
    }
}
