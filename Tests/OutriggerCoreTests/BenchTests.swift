import Foundation
import OutriggerBench
import Testing

@Suite("Load scheduler and report")
struct LoadSchedulerTests {
    @Test func openLoopHandsOutRequestsAtTheirIntendedTimes() {
        var scheduler = LoadScheduler(rate: 1000, start: 5_000_000, duration: 10_000_000)  // 1 ms apart, 10 ms
        #expect(scheduler.connectionFree(now: 5_000_000) == .send(intended: 5_000_000))
        #expect(scheduler.connectionFree(now: 5_000_000) == .wait(until: 6_000_000), "the next one is not due yet")
        #expect(scheduler.connectionFree(now: 6_000_000) == .send(intended: 6_000_000))
        // A connection that frees up late sends at once, and latency will count from the due time.
        #expect(scheduler.connectionFree(now: 9_500_000) == .send(intended: 7_000_000))
        #expect(scheduler.connectionFree(now: 9_500_000) == .send(intended: 8_000_000))
        #expect(scheduler.connectionFree(now: 9_500_000) == .send(intended: 9_000_000))
        #expect(scheduler.connectionFree(now: 9_500_000) == .wait(until: 10_000_000))
        for index in 5..<10 { #expect(scheduler.connectionFree(now: 20_000_000) == .send(intended: 5_000_000 + UInt64(index) * 1_000_000)) }
        #expect(scheduler.connectionFree(now: 20_000_000) == .stop, "exactly rate × duration requests")
        #expect(scheduler.scheduled == 10)
    }

    @Test func closedLoopSendsWheneverAConnectionIsFree() {
        var scheduler = LoadScheduler(rate: nil, start: 0, duration: 100)
        #expect(scheduler.connectionFree(now: 10) == .send(intended: 10))
        #expect(scheduler.connectionFree(now: 10) == .send(intended: 10))
        #expect(scheduler.connectionFree(now: 100) == .stop)
    }

    @Test func outcomesAndPercentiles() throws {
        var results = BenchResults()
        for micros in 1...1000 { results.record(.status2xx, latencyMicroseconds: UInt64(micros * 10)) }
        results.record(.status5xx, latencyMicroseconds: 5)
        results.record(.timeout, latencyMicroseconds: 10_000_000)
        results.record(.connectError, latencyMicroseconds: nil)
        results.measuredSeconds = 2
        #expect(results.completed == 1000)
        #expect(results.failed == 3)
        #expect(results.achievedRate == 501.5)
        #expect(abs(results.latencyMilliseconds(50) - 5) < 0.01)
        let summary = try JSONDecoder().decode([String: AnyDecodable].self, from: results.json())
        #expect(summary.keys.sorted() == ["achievedRate", "completed", "durationSeconds", "failed", "latencyMilliseconds", "outcomes", "sent", "unfinished"])
        #expect(RequestOutcome.status(404) == .status4xx && !RequestOutcome.status4xx.isFailure)
    }
}

/// Decodes any JSON value (only its presence is checked).
struct AnyDecodable: Decodable {
    init(from decoder: any Decoder) throws {}
}
