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

    @Test func tlsWithALPNForBothProtocols() async throws {
        try await withTLSHarness { harness, tls in
            let url = "https://127.0.0.1:\(harness.port)/?size=32"
            let (h2, h2Report) = try await Self.bench([url, "--http2", "-c", "2", "-m", "4", "--rate", "100", "--duration", "1s",
                                                       "--warmup", "0s", "--cacert", tls.certificate])
            #expect(h2.status == 0, "\(h2.stderr)")
            #expect(h2.stderr.contains("h2 over TLS"))
            #expect((h2Report["outcomes"] as? [String: Int])?["2xx"] == 100)
            let (h1, h1Report) = try await Self.bench([url, "-c", "2", "--rate", "100", "--duration", "1s", "--warmup", "0s", "--insecure"])
            #expect(h1.status == 0, "\(h1.stderr)")
            #expect((h1Report["outcomes"] as? [String: Int])?["2xx"] == 100)
            let stats = try await fetch(harness.adminURL + "/stats/prometheus").body
            #expect(stats.contains("outrigger_downstream_connections_total{listener=\"quickstart\"} 4\n"), "2 h2 + 2 HTTP/1.1 TLS connections")

            // An unverifiable certificate is a connect error, not a silent success.
            let (_, untrusted) = try await Self.bench([url, "-c", "1", "--rate", "20", "--duration", "500ms", "--warmup", "0s"])
            #expect(untrusted["completed"] as? Int == 0)
            #expect(((untrusted["outcomes"] as? [String: Int])?["connect_error"] ?? 0) > 0)
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
        #expect(refused.status == 1, "a run in which nothing answered fails: \(refused.stderr)")
        #expect(refused.stderr.contains("no request got a response"), "\(refused.stderr)")
        #expect(((refusedReport["outcomes"] as? [String: Int])?["connect_error"] ?? 0) > 0)
    }

    /// At the same load, `outrigger bench --max` agrees with wrk (HTTP/1.1) and h2load (h2c). Each pair runs
    /// at the same time against the same upstream, which answers after a fixed 1.2 s, so both tools live
    /// through the same scheduling noise and should both see ~1.2 s and two answers per request slot. On a CI
    /// machine busy with the rest of this suite, up to ~150 ms of extra latency was seen, more for one tool
    /// than the other; the 20 % bounds stay clear of that. The 3 s window holds two answers per slot for
    /// every tool with 0.6 s to spare, so the rates are not at the mercy of the window's edge.
    /// At full speed the rates agree within 1 % (`scripts/bench.py --validate`). The noise without a delay, at full speed and one tool at a time, is measured
    /// by `scripts/bench.py --validate`.
    @Test func agreesWithWrkAndH2load() async throws {
        try await withHarness(echoes: 1) { harness in
            let url = "http://127.0.0.1:\(harness.echoes[0].localAddress.port!)/?delay=1200"

            async let wrkRun = run(try which("wrk"), ["-t1", "-c8", "-d3s", "--latency", url])
            async let h1Run = Self.bench([url, "--max", "-c", "8", "--duration", "3s", "--warmup", "0s"])
            let (wrk, (h1, h1Report)) = try await (wrkRun, h1Run)
            let wrkRate = try #require(Self.number(after: "Requests/sec:", in: wrk.stdout))
            let wrkTypical = try #require(Self.wrkMilliseconds(after: "50%", in: wrk.stdout))
            #expect(h1.status == 0, "\(h1.stderr)")
            try Self.expectAgreement(h1Report, rate: wrkRate, typicalMilliseconds: wrkTypical, tool: "wrk", inFlight: 8)

            let log = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-h2load-\(UUID().uuidString).log").path
            defer { try? FileManager.default.removeItem(atPath: log) }
            async let h2loadRun = run(try which("h2load"), ["-c1", "-m8", "-D", "3", "--log-file=\(log)", url])
            async let h2Run = Self.bench([url, "--max", "--http2", "-c", "1", "-m", "8", "--duration", "3s", "--warmup", "0s"])
            let (h2load, (h2, h2Report)) = try await (h2loadRun, h2Run)
            let h2loadRate = try #require(Self.number(after: "finished in", in: h2load.stdout, skippingTo: ", "))
            let h2loadTypical = try #require(Self.h2loadMedianMilliseconds(logFile: log))
            #expect(h2.status == 0, "\(h2.stderr)")
            try Self.expectAgreement(h2Report, rate: h2loadRate, typicalMilliseconds: h2loadTypical, tool: "h2load", inFlight: 8)
        }
    }

    /// Our req/s and p50 against another tool's req/s and median latency. With 1.2 s requests in a 3 s window,
    /// counts come in rounds of `inFlight`: one round landing on the other side of a window's edge (a busy
    /// machine starts one tool a little later) moves a rate by `inFlight / 3 s`, so that much may differ.
    static func expectAgreement(_ report: [String: Any], rate: Double, typicalMilliseconds: Double, tool: String, inFlight: Int) throws {
        let ourRate = try #require(report["achievedRate"] as? Double)
        let ourMedian = try #require((report["latencyMilliseconds"] as? [String: Double])?["p50"])
        #expect(report["failed"] as? Int == 0)
        #expect(abs(ourRate - rate) <= max(0.2 * rate, Double(inFlight) / 3) + 0.01, "req/s: ours \(ourRate), \(tool) \(rate)")
        // Both tools run at once; on a machine busy with the rest of the suite one of them can be scheduled late
        // for a round (a fresh-clone run saw 23 %), so 30 %: a unit slip or coordinated omission is far outside it.
        #expect(abs(ourMedian - typicalMilliseconds) / typicalMilliseconds < 0.3, "p50 ms: ours \(ourMedian), \(tool) \(typicalMilliseconds)")
        #expect(ourMedian >= 1200 && typicalMilliseconds >= 1200, "the upstream's 1.2 s delay is a floor for both")
    }

    /// The number that follows `label` (after `skippingTo`, when given) in a tool's output.
    static func number(after label: String, in output: String, skippingTo separator: String? = nil) -> Double? {
        guard var rest = output.range(of: label).map({ output[$0.upperBound...] }) else { return nil }
        if let separator, let range = rest.range(of: separator) { rest = rest[range.upperBound...] }
        return Double(rest.drop(while: { $0 == " " }).prefix(while: { $0.isNumber || $0 == "." }))
    }

    /// A percentile from wrk's "Latency Distribution" section (`     50%   50.21ms`); searched from that
    /// heading, since the stats table above it has columns such as `62.50%`.
    static func wrkMilliseconds(after label: String, in output: String) -> Double? {
        guard let section = output.range(of: "Latency Distribution"),
              let range = output[section.upperBound...].range(of: " " + label + " ") else { return nil }
        return milliseconds(output[range.upperBound...].drop(while: { $0 == " " }).prefix(while: { !$0.isWhitespace }))
    }

    /// `400us`, `50.21ms` or `1.02s` in milliseconds.
    static func milliseconds(_ token: Substring) -> Double? {
        guard let value = Double(token.prefix(while: { $0.isNumber || $0 == "." })) else { return nil }
        if token.hasSuffix("us") { return value / 1000 }
        if token.hasSuffix("ms") { return value }
        if token.hasSuffix("s") { return value * 1000 }
        return nil
    }

    /// The median request time in h2load's `--log-file` (tab-separated: start, status, microseconds).
    static func h2loadMedianMilliseconds(logFile: String) -> Double? {
        guard let text = try? String(contentsOfFile: logFile, encoding: .utf8) else { return nil }
        let times = text.split(separator: "\n").compactMap { line -> Double? in
            let fields = line.split(separator: "\t")
            return fields.count >= 3 ? Double(fields[2]).map { $0 / 1000 } : nil
        }.sorted()
        return times.isEmpty ? nil : times[times.count / 2]
    }

    @Test func badArgumentsAreRejected() async throws {
        let both = try await run(try outriggerExecutable(), ["bench", "http://127.0.0.1:1/", "--rate", "10", "--max"])
        #expect(both.status != 0)
        #expect(both.stderr.contains("either --rate N (open loop) or --max"))
        let badURL = try await run(try outriggerExecutable(), ["bench", "ftp://x", "--max"])
        #expect(badURL.stderr.contains("expected a URL"))
    }
}
