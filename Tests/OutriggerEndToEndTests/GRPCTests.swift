import Foundation
import OutriggerConfig
import Testing

@Suite("gRPC through the sidecar, end to end (grpcio client and server)")
struct GRPCTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/grpc_check.py").path

    static func call(_ mode: String, target: String) async throws -> [String: Any] {
        let result = try await run("python3", [script, mode, target])
        guard result.status == 0, let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] else {
            throw CurlFailure(status: result.status, stderr: result.stderr + result.stdout)
        }
        return object
    }

    @Test func unaryStreamingAndStatusesPassThrough() async throws {
        let server = try ChildProcess(try which("python3"), [Self.script, "server"])
        defer { server.kill() }
        let text = try await server.waitForOutput(containing: "port ")
        let port = try ProcessTests.port(in: text, after: "port ")
        try await withHarness(echoes: 0) { _ in
            Harness.config(routes: [RouteConfig(destination: .cluster("grpc"))],
                           clusters: [ClusterConfig(name: "grpc", endpoints: [HostPort(host: "127.0.0.1", port: port)], upstreamProtocol: .http2)])
        } _: { (harness: Harness) async throws in
            let result = try await Self.call("client", target: "127.0.0.1:\(harness.port)")
            #expect(result["unary"] as? String == "hello")
            #expect(result["unary_trailer"] as? String == "unary", "trailing metadata passes through")
            #expect((result["server_stream"] as? [String])?.count == 50)
            #expect((result["server_stream"] as? [String])?.last == "item-49")
            #expect((result["bidi"] as? [String])?.count == 300)
            #expect((result["bidi"] as? [String])?.first == "A")
            #expect(result["fail"] as? String == "RESOURCE_EXHAUSTED", "grpc-status from the trailers reaches the client")
            #expect(result["fail_details"] as? String == "told to fail")
        }
    }

    @Test func localRepliesAreGRPCStatuses() async throws {
        let refusing = try RefusingPort()
        defer { refusing.close() }
        let port = refusing.port
        try await withHarness(echoes: 0) { _ in
            Harness.config(routes: [RouteConfig(match: RouteMatchConfig(path: .prefix("/test.")), destination: .cluster("down"))],
                           clusters: [ClusterConfig(name: "down", endpoints: [HostPort(host: "127.0.0.1", port: port)], upstreamProtocol: .http2)])
        } _: { (harness: Harness) async throws in
            let unavailable = try await Self.call("status", target: "127.0.0.1:\(harness.port)")
            #expect(unavailable["code"] as? String == "UNAVAILABLE", "\(unavailable)")
            #expect((unavailable["details"] as? String)?.contains("could not connect") == true)
        }
    }
}

@Suite("gRPC retries on the status in the trailers, end to end (grpcio)")
struct GRPCTrailerRetryTests {
    @Test func unavailableInTheTrailersIsRetriedOnAnotherEndpoint() async throws {
        let flaky = try ChildProcess(try which("python3"), [GRPCTests.script, "flaky"])
        defer { flaky.kill() }
        let good = try ChildProcess(try which("python3"), [GRPCTests.script, "server"])
        defer { good.kill() }
        let flakyPort = try ProcessTests.port(in: try await flaky.waitForOutput(containing: "port "), after: "port ")
        let goodPort = try ProcessTests.port(in: try await good.waitForOutput(containing: "port "), after: "port ")
        for retries in [false, true] {
            try await withHarness(echoes: 0) { _ in
                Harness.config(routes: [RouteConfig(destination: .cluster("grpc"),
                                                    retries: retries ? RetryPolicy(attempts: 2, retryOn: [.unavailable]) : .none)],
                               clusters: [ClusterConfig(name: "grpc", endpoints: [HostPort(host: "127.0.0.1", port: flakyPort),
                                                                                  HostPort(host: "127.0.0.1", port: goodPort)],
                                                        upstreamProtocol: .http2)])
            } _: { (harness: Harness) async throws in
                let result = try await run("python3", [GRPCTests.script, "unary-many", "127.0.0.1:\(harness.port)", "10"])
                let codes = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])["codes"] as? [String: Int]
                if retries {
                    #expect(codes == ["OK": 10], "UNAVAILABLE in the trailers is retried: \(result.stdout) \(result.stderr)")
                } else {
                    #expect(codes?["UNAVAILABLE"] == 5, "without a policy the flaky endpoint's answers reach the client: \(result.stdout)")
                }
            }
        }
    }
}
