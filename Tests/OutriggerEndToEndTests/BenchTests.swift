import Foundation
import OutriggerConfig
import Testing

@Suite("outrigger bench, end to end")
struct BenchCommandTests {
    static func bench(_ arguments: [String]) async throws -> (ProcessResult, [String: Any]) {
        let json = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-bench-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: json) }
        let result = try await run(try outriggerExecutable(), ["bench"] + arguments + ["--json", json], environment: ["SWIFT_BACKTRACE": "enable=no"])
        let object = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json)))) as? [String: Any] ?? [:]
        return (result, object)
    }

    @Test func openLoopSendsExactlyRateTimesDuration() async throws {
        try await withHarness(echoes: 1) { harness in
            let (result, report) = try await Self.bench([harness.url + "/?size=32", "--rate", "200", "--duration", "2s", "--warmup", "0s", "-c", "4"])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(report["sent"] as? Int == 400)
            #expect(report["completed"] as? Int == 400)
            #expect(report["failed"] as? Int == 0)
            #expect((report["outcomes"] as? [String: Int])?["2xx"] == 400)
            #expect(result.stdout.contains("latency ms min"))
            // The proxy saw every one of them.
            #expect(try await fetch(harness.adminURL + "/stats/prometheus").body.contains("outrigger_downstream_requests_total{listener=\"quickstart\"} 400\n"))
        }
    }

    @Test func h2cOpenLoopOverStreams() async throws {
        try await withHarness(echoes: 1) { harness in
            let (result, report) = try await Self.bench([harness.url + "/?size=32", "--http2", "-c", "2", "-m", "4",
                                                         "--rate", "200", "--duration", "2s", "--warmup", "0s"])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(report["sent"] as? Int == 400)
            #expect((report["outcomes"] as? [String: Int])?["2xx"] == 400)
            let stats = try await fetch(harness.adminURL + "/stats/prometheus").body
            #expect(stats.contains("outrigger_downstream_connections_total{listener=\"quickstart\"} 2\n"), "two h2c connections carried them")
        }
    }

    @Test func closedLoopAndFailuresAreCountedByOutcome() async throws {
        try await withHarness(echoes: 1) { harness in
            let (ok, okReport) = try await Self.bench([harness.url + "/", "--max", "--duration", "1s", "--warmup", "200ms", "-c", "4"])
            #expect(ok.status == 0)
            #expect((okReport["completed"] as? Int ?? 0) > 0)
            #expect(okReport["failed"] as? Int == 0)

            let (failing, failingReport) = try await Self.bench([harness.url + "/?status=503", "--max", "--duration", "500ms", "--warmup", "0s", "-c", "2"])
            #expect(failing.status == 0)
            #expect((failingReport["outcomes"] as? [String: Int])?["5xx"] == failingReport["failed"] as? Int)
        }
        let refusing = try RefusingPort()
        defer { refusing.close() }
        let (refused, refusedReport) = try await Self.bench(["http://127.0.0.1:\(refusing.port)/", "--max", "--duration", "500ms", "--warmup", "0s", "-c", "1"])
        #expect(refused.status == 0)
        #expect(((refusedReport["outcomes"] as? [String: Int])?["connect_error"] ?? 0) > 0)
    }

    @Test func badArgumentsAreRejected() async throws {
        let both = try await run(try outriggerExecutable(), ["bench", "http://127.0.0.1:1/", "--rate", "10", "--max"])
        #expect(both.status != 0)
        #expect(both.stderr.contains("either --rate N (open loop) or --max"))
        let badURL = try await run(try outriggerExecutable(), ["bench", "ftp://x", "--max"])
        #expect(badURL.stderr.contains("expected a URL"))
    }
}
