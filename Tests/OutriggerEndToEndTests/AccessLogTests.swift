import Foundation
import OutriggerConfig
@testable import OutriggerProxy
import Testing

@Suite("Access log, end to end")
struct AccessLogEndToEndTests {
    /// The JSON lines written to `path` once there are `count` of them (polled: lines are batched for up to
    /// 100 ms before they are written).
    static func lines(in path: String, count: Int) async throws -> [[String: Any]] {
        var lines: [[String: Any]] = []
        try await waitUntil {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            lines = text.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            return lines.count >= count
        }
        return lines
    }

    @Test func aRequestCutByTheDrainTimeoutIsLoggedAsSuch() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-drain-\(UUID()).log").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await withHarness(echoes: 1) { endpoints in
            var config = Harness.defaultConfig(endpoints)
            config.drainTimeout = .milliseconds(300)
            // Only the drain may end the request, however long a busy machine takes to get there.
            config.clusters[0].timeout = .seconds(120)
            config.listeners[0].accessLog = AccessLogConfig(path: path, format: .json)
            return config
        } _: { (harness: Harness) async throws in
            async let slow = curl(["-o", "/dev/null", "-w", "%{http_code}", harness.url + "/?delay=55000"])
            try await waitUntil { try await fetch(harness.adminURL + "/stats").body.contains("\"requests_active\" : 1") }
            await harness.sidecar.shutdown()
            #expect(try await slow.stdout == "000", "cut, not answered")
            let line = try await Self.lines(in: path, count: 1).first
            #expect(line?["reason"] as? String == "drain_timeout", "\(String(describing: line))")
        }
    }

    @Test func everyRequestHasALineWithItsDecisionsInTheReasonField() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-access-\(UUID()).log").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await withHarness(echoes: 2) { endpoints in
            Harness.config(routes: [
                RouteConfig(match: RouteMatchConfig(path: .prefix("/api")), destination: .cluster("c"), retries: RetryPolicy(attempts: 2, retryOn: [.fiveXX])),
            ], clusters: [ClusterConfig(name: "c", endpoints: endpoints)]) { listener in
                listener.accessLog = AccessLogConfig(path: path, format: .json)
            }
        } _: { (harness: Harness) async throws in
            harness.echoes[0].setFailing(status: 503)
            // Round robin: the first goes to the failing echo and is retried on the other.
            #expect(try await fetch(harness.url + "/api/one", ["-H", "x-request-id: first", "-A", "tester/1"]).status == 200)
            harness.echoes[0].setFailing(status: nil)
            let posted = try await fetch(harness.url + "/api/two", ["-X", "POST", "--data", "12345"])
            #expect(posted.status == 200)
            let generatedID = try #require(posted.echo?.headers["x-request-id"])
            #expect(try await fetch(harness.url + "/elsewhere").status == 404)
            let lines = try await Self.lines(in: path, count: 3)
            #expect(lines.count == 3)
            let (retried, plain, unrouted) = (lines[0], lines[1], lines[2])
            #expect(retried["path"] as? String == "/api/one" && retried["status"] as? Int == 200)
            #expect(retried["reason"] as? String == "retry:5xx", "\(retried)")
            #expect(retried["attempts"] as? Int == 2 && retried["cluster"] as? String == "c")
            #expect(retried["endpoint"] as? String == "127.0.0.1:\(harness.echoes[1].localAddress.port!)", "the endpoint that answered")
            #expect(retried["request_id"] as? String == "first" && retried["user_agent"] as? String == "tester/1")
            #expect(retried["upstream_service_ms"] is Double && retried["protocol"] as? String == "HTTP/1.1")
            #expect(plain["method"] as? String == "POST" && plain["reason"] as? String == "-" && plain["bytes_received"] as? Int == 5)
            #expect(generatedID.count == 36 && plain["request_id"] as? String == generatedID, "the id generated here, as the upstream got it")
            #expect((plain["bytes_sent"] as? Int ?? 0) > 0)
            #expect(unrouted["status"] as? Int == 404 && unrouted["reason"] as? String == "no_route" && unrouted["cluster"] is NSNull)
            #expect(try await fetch(harness.adminURL + "/stats/prometheus").body
                .contains("outrigger_access_log_dropped_lines_total{path=\"\(path)\"} 0"))
        }
    }

    @Test func aLocalReplyAfterRetriesListsThemAll() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-access-\(UUID()).log").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await withHarness(echoes: 2) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("c"), retries: RetryPolicy(attempts: 3, retryOn: [.fiveXX]))],
                           clusters: [ClusterConfig(name: "c", endpoints: endpoints)]) { listener in
                listener.accessLog = AccessLogConfig(path: path, format: .json)
            }
        } _: { (harness: Harness) async throws in
            for echo in harness.echoes { echo.setFailing(status: 503) }
            #expect(try await fetch(harness.url + "/").status == 503)
            #expect(try await fetch(harness.url + "/", ["-X", "POST", "--data", "x"]).status == 503)
            let lines = try await Self.lines(in: path, count: 2)
            #expect(lines[0]["reason"] as? String == "retry:5xx,retry:5xx,no_retry:attempts", "\(lines[0])")
            #expect(lines[0]["attempts"] as? Int == 3 && lines[0]["status"] as? Int == 503)
            #expect(lines[1]["reason"] as? String == "no_retry:not_idempotent", "a POST that reached the upstream: \(lines[1])")
        }
    }

    @Test func anAccessLogThatCannotBeOpenedStopsTheStart() async throws {
        let directory = FileManager.default.temporaryDirectory.path
        var config = Harness.config(routes: [RouteConfig(destination: .cluster("c"))],
                                    clusters: [ClusterConfig(name: "c", endpoints: [HostPort(host: "127.0.0.1", port: 1)])])
        config.listeners[0].accessLog = AccessLogConfig(path: directory)
        await #expect(throws: AccessLogOpenError.self) { _ = try await Sidecar.start(config: config, logger: Harness.quietLogger) }
    }
}
